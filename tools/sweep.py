"""The paper's protocol for a VTAB-1k or FGVC config: grid search on the
validation split, retraining with several seeds, results tables.

Every job runs through tools/train.py (tools/dist_train.sh with --gpus N):
one after another (the default), several at once on this machine
(--devices 0,1,... with --gpus GPUs each, or --jobs N on CPU), or as SLURM
job arrays (--launcher slurm --partition P). A sweep restarted with the
same arguments skips finished jobs and resumes the others, wherever they
ran. See vpt_mm/sweep/protocol.py for the layout of the work dir.

Examples:
    python tools/sweep.py configs/vtab/vpt_deep_vit-b.py --tasks dmlab
    python tools/sweep.py configs/vtab/vpt_deep_vit-b.py \
        --devices 0,1,2,3,4,5,6,7
    python tools/sweep.py configs/vtab/vpt_deep_vit-b.py --launcher slurm \
        --partition gpu
    python tools/sweep.py configs/fgvc/vpt_shallow_vit-b.py --gpus 8 \
        --num-tokens 1 5 10
    python tools/sweep.py configs/fgvc/vpt_deep_vit-b.py \
        --train-fraction 0.1 --work-dir work_dirs/sweep/fgvc-10pct
"""
import argparse
import os.path as osp
import shlex
import sys

from vpt_mm.config import (
    benchmark_dataset,
    config_from_file,
    parse_cfg_options,
)
from vpt_mm.datasets import get_task, tasks_of
from vpt_mm.sweep import (
    VPT_LRS,
    WEIGHT_DECAYS,
    ConcurrentExecutor,
    SequentialExecutor,
    SlurmExecutor,
    Sweep,
    SweepSpec,
    device_slots,
)

TOOLS = osp.dirname(osp.abspath(__file__))


def backbone_label(backbone: dict) -> str:
    """A short row label such as ``ViT-b`` from the backbone config."""
    if not backbone:
        return ''
    name = str(backbone.get('type', '')).split('.')[-1]
    name = name[len('Prompted'):] if name.startswith('Prompted') else name
    arch = backbone.get('arch', backbone.get('depth', None))
    return f'{name}-{arch}' if isinstance(arch, (str, int)) else name


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Grid search, retraining with seeds, results tables')
    parser.add_argument('config', help='a configs/vtab or configs/fgvc config')
    parser.add_argument(
        '--tasks', nargs='+', help='tasks to run (default: every task of '
        "the config's benchmark)")
    parser.add_argument(
        '--work-dir', help='root of the sweep (default: '
        'work_dirs/sweep/<config name>)')
    parser.add_argument(
        '--lrs', nargs='+', type=float, default=[],
        help='base lr grid (default: the config\'s sweep_lrs, else the '
        'paper\'s VPT/linear grid; full fine-tuning configs set 0.001 '
        '0.0005 0.0001 0.005)')
    parser.add_argument(
        '--wds', nargs='+', type=float, default=[],
        help='weight decay grid (default: the config\'s sweep_weight_decays, '
        'else 0.01 0.001 0.0001 0)')
    parser.add_argument(
        '--num-tokens', nargs='+', type=int, default=[],
        help='prompt lengths to search (default: the config\'s '
        'prompt_lengths list; with none, its prompt_cfg.num_tokens alone)')
    parser.add_argument(
        '--seeds', type=int, default=3, help='final runs per task '
        '(default: 3)')
    parser.add_argument(
        '--train-fraction', type=float, help='train on this seeded '
        'per-class fraction of the training split (0.1 .. 0.8, Fig. 3)')
    parser.add_argument('--fraction-seed', type=int, default=0)
    parser.add_argument(
        '--gpus', type=int, default=1, help='processes per job; > 1 uses '
        'tools/dist_train.sh. The config\'s batch size is per process: '
        'keep the paper\'s total 128 with --cfg-options '
        'train_dataloader.batch_size=<128 / gpus>')
    parser.add_argument(
        '--devices', help='comma-separated GPU ids: run one job per group '
        'of --gpus of them at once (CUDA_VISIBLE_DEVICES), e.g. 0,1,2,3')
    parser.add_argument(
        '--jobs', type=int, help='run this many jobs at once on this '
        'machine (CPU; with GPUs use --devices)')
    parser.add_argument(
        '--launcher', choices=('local', 'slurm'), default='local',
        help='where the jobs run (default: local)')
    parser.add_argument(
        '--threads-per-job', type=int,
        help='CPU threads of each job (OMP_NUM_THREADS; default: torch\'s, '
        'the cores divided among --jobs, SLURM\'s --cpus-per-task). The '
        'thread count changes float rounding: compare sweeps run with the '
        'same one')
    parser.add_argument('--partition', help='SLURM partition')
    parser.add_argument(
        '--cpus-per-task', type=int, default=5,
        help='SLURM --cpus-per-task of each job (default: 5)')
    parser.add_argument(
        '--slurm-gpus', type=int, help='GPUs each SLURM job asks for '
        '(--gres=gpu:N; default: --gpus; 0 on a cluster without GPUs)')
    parser.add_argument(
        '--max-parallel', type=int,
        help='SLURM: at most this many jobs of the array at once')
    parser.add_argument(
        '--sbatch-args', default='', help='more sbatch arguments, e.g. '
        '"--time=04:00:00 --qos=normal"')
    parser.add_argument(
        '--method', help='row label of the table (default: config name)')
    parser.add_argument(
        '--backbone', help='row label of the table (default: from the '
        'config)')
    parser.add_argument(
        '--keep-checkpoints', action='store_true',
        help='keep the jobs\' checkpoints (default: delete once tested)')
    parser.add_argument(
        '--restart', action='store_true',
        help='rerun from scratch every job whose resolved config changed '
        'since it ran (default: such a job is an error), and accept new '
        'sweep arguments')
    parser.add_argument(
        '--dry-run', action='store_true',
        help='print the commands of the unfinished tuning jobs')
    parser.add_argument(
        '--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
        help='overrides passed verbatim to every job')
    return parser.parse_args()


def build_executor(args: argparse.Namespace, work_dir: str, name: str):
    """The executor the arguments ask for; None runs the jobs one after
    another."""
    if args.launcher == 'slurm':
        if args.devices or args.jobs:
            raise SystemExit('--devices / --jobs are for local runs; SLURM '
                             'runs the array tasks where it has room '
                             '(--max-parallel caps them)')
        return SlurmExecutor(
            args.partition, work_dir,
            gpus=args.gpus if args.slurm_gpus is None else args.slurm_gpus,
            cpus_per_task=args.cpus_per_task,
            max_parallel=args.max_parallel,
            sbatch_args=shlex.split(args.sbatch_args), job_name=name,
            threads=args.threads_per_job)
    if (args.partition or args.max_parallel or args.sbatch_args
            or args.slurm_gpus is not None):
        raise SystemExit('--partition, --slurm-gpus, --max-parallel and '
                         '--sbatch-args need --launcher slurm')
    if args.devices and args.jobs:
        raise SystemExit('give --devices (GPUs) or --jobs (CPU), not both')
    if args.devices:
        devices = [d for d in args.devices.split(',') if d]
        return ConcurrentExecutor(device_slots(devices, args.gpus),
                                  threads=args.threads_per_job)
    if args.jobs:
        return ConcurrentExecutor(args.jobs, threads=args.threads_per_job)
    if args.threads_per_job:
        return SequentialExecutor(threads=args.threads_per_job)
    return None


def main() -> None:
    args = parse_args()
    name = osp.splitext(osp.basename(args.config))[0]
    cfg = config_from_file(args.config, parse_cfg_options(args.cfg_options))
    dataset = benchmark_dataset(cfg.get('train_dataloader', None))
    if dataset is None or cfg.get('task', None) is None:
        raise ValueError(f'{args.config} is not a VTAB-1k or FGVC config '
                         '(no task key or benchmark dataset)')
    benchmark = get_task(cfg.task).benchmark
    tasks = args.tasks or tasks_of(benchmark)
    spec = SweepSpec(
        config=osp.abspath(args.config),
        lrs=args.lrs or list(cfg.get('sweep_lrs') or VPT_LRS),
        weight_decays=args.wds or list(
            cfg.get('sweep_weight_decays') or WEIGHT_DECAYS),
        num_tokens=args.num_tokens or list(cfg.get('prompt_lengths') or []),
        train_fraction=args.train_fraction,
        fraction_seed=args.fraction_seed,
        cfg_options=args.cfg_options)
    work_dir = args.work_dir or osp.join('work_dirs', 'sweep', name)
    sweep = Sweep(
        spec,
        work_dir=work_dir,
        tasks=tasks,
        benchmark=benchmark,
        seeds=args.seeds,
        method=args.method or name,
        backbone=args.backbone or backbone_label(cfg.model.get('backbone')),
        gpus=args.gpus,
        keep_checkpoints=args.keep_checkpoints,
        tools_dir=TOOLS,
        dry_run=args.dry_run,
        restart=args.restart,
        executor=build_executor(args, work_dir, name))
    sweep.run()
    if sweep.failed:
        sys.exit(f'[sweep] {len(sweep.failed)} task(s) gave no number: '
                 f'{sweep.failed} (shown as "failed" in the tables)')


if __name__ == '__main__':
    main()
