"""The paper's protocol for a VTAB-1k or FGVC config: grid search on the
validation split, retraining with several seeds, results tables.

Every job runs through tools/train.py (tools/dist_train.sh with --gpus N);
a sweep restarted with the same arguments skips finished jobs and resumes
the others. See vpt_mm/sweep.py for the layout of the work dir.

Examples:
    python tools/sweep.py configs/vtab/vpt_deep_vit-b.py --tasks dmlab
    python tools/sweep.py configs/fgvc/vpt_shallow_vit-b.py --gpus 8 \
        --num-tokens 1 5 10
    python tools/sweep.py configs/fgvc/vpt_deep_vit-b.py \
        --train-fraction 0.1 --work-dir work_dirs/sweep/fgvc-10pct
"""
import argparse
import os.path as osp
import sys

from vpt_mm.datasets import get_task, tasks_of
from vpt_mm.runner import (
    benchmark_dataset,
    config_from_file,
    parse_cfg_options,
)
from vpt_mm.sweep import VPT_LRS, WEIGHT_DECAYS, Sweep, SweepSpec

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
    sweep = Sweep(
        spec,
        work_dir=args.work_dir or osp.join('work_dirs', 'sweep', name),
        tasks=tasks,
        benchmark=benchmark,
        seeds=args.seeds,
        method=args.method or name,
        backbone=args.backbone or backbone_label(cfg.model.get('backbone')),
        gpus=args.gpus,
        keep_checkpoints=args.keep_checkpoints,
        tools_dir=TOOLS,
        dry_run=args.dry_run,
        restart=args.restart)
    sweep.run()
    if sweep.failed:
        sys.exit(f'[sweep] {len(sweep.failed)} task(s) gave no number: '
                 f'{sweep.failed} (shown as "failed" in the tables)')


if __name__ == '__main__':
    main()
