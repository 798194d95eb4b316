"""Check and measure everything that needs a GPU, in one command (run by
``tools/gpu_check.sh``).

On one CUDA GPU, within ``--budget`` seconds of wall time (8 minutes by
default), it runs:

1. the fast half of the ``cuda`` test tier (``tests/test_cuda.py``: fused
   == token form in fp32 and under autocast, AMP training steps of every
   backbone and of SETR);
2. the cost benchmark of ViT-B/16 at 224, batch 64 (the paper's Table 12
   setting: Full, Linear, VPT-Shallow, VPT-Deep for p in {1, 50, 200},
   token and fused forms), in fp32 and under bf16 autocast: ms/img and
   ``torch.cuda.max_memory_allocated``, with the ratios and the goals
   (VPT-Deep p=50 step <= 0.70x Full in time and <= 0.60x in peak memory;
   fused p=200 inference <= 1.05x the frozen backbone);
3. time to a result: one VTAB-1k task of 1000 generated 224x224 training
   images (and 500 test images), VPT-Deep ViT-B/16, 100 epochs, bf16
   autocast, wall clock from launch to the test accuracy (goal <= 60 s),
   with the share of each iteration spent waiting for data;
4. the tools half of the tier (``test_tool_*``: ``dist_train.sh`` with
   nccl, resume after SIGKILL with ``--deterministic``, ``infer.py``, the
   analysis tools and the benchmark on the device, a killed sweep);
5. the cost of Swin-B (batch 64); time to a result again with the
   training set decoded once (:class:`~vpt_mm.datasets.InMemoryDataset`);
   the cost of SETR-PUP ViT-L at 512, batch 2.

Every step runs in its own process with its own time limit; a failed or
timed-out step is recorded and the next one runs. The exit status is 0 only
if every step ran through. It writes
``OUT_DIR/report.md``, ``OUT_DIR/report.json`` (GPU name, versions, every
figure, every step's command, status and time) and ``OUT_DIR/gpu_check.log``
(every step's output); intermediate files go to ``--work-dir``.

``--dry-run`` prints the plan and runs nothing; ``--smoke`` runs the same
plan at toy sizes (tiny models, a few images), on the CPU where there is no
GPU: the test suite checks the script that way.

Example:
    bash .wheelhouse/install.sh && bash tools/gpu_check.sh $OUT
"""
import argparse
import glob
import io
import json
import os
import os.path as osp
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
PY = sys.executable
#: Goals of the issue that asked for this check, on a GPU.
GOALS = dict(deep50_train_time=0.70, deep50_train_memory=0.60,
             fused200_infer_time=1.05, time_to_result_s=60.0)

# Tiny stand-ins of the measured configs for --smoke.
TINY_VIT = ("arch=dict(_delete_=True, embed_dims=32, num_layers=2, "
            "num_heads=2, feedforward_channels=64), img_size=32, "
            "patch_size=8")
SMOKE_CONFIGS = {
    'vit': f"""
_base_ = ['{REPO}/configs/vtab/vpt_deep_vit-b.py']
model = dict(backbone=dict({TINY_VIT}), head=dict(in_channels=32))
""",
    'swin': f"""
_base_ = ['{REPO}/configs/vtab/vpt_deep_swin-b.py']
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=16, depths=[2, 2],
                            num_heads=[2, 4]),
                  img_size=32, window_size=4, out_indices=(1, )),
    head=dict(in_channels=32))
""",
    'dinov2': f"""
_base_ = ['{REPO}/configs/vtab/vpt_deep_dinov2-b14.py']
model = dict(
    backbone=dict(img_size=28, timm_kwargs=dict(depth=2, embed_dim=32,
                                                num_heads=2)),
    head=dict(in_channels=32))
""",
    'setr': f"""
_base_ = ['{REPO}/configs/setr/vpt_deep_vit-l_ade20k.py']
model = dict(
    data_preprocessor=dict(size=(32, 32)),
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, num_layers=4,
                            num_heads=2, feedforward_channels=64),
                  img_size=(32, 32), out_indices=(0, 1, 2, 3)),
    decode_head=dict(in_channels=32, channels=16),
    auxiliary_head=None)
""",
    'ttr': f"""
_base_ = ['{REPO}/configs/vtab/vpt_deep_vit-b.py']
model = dict(backbone=dict({TINY_VIT}), head=dict(in_channels=32))
_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(32, 32), interpolation='bilinear'),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=8, num_workers=2,
                        dataset=dict(pipeline=_pipeline))
val_dataloader = dict(batch_size=8, num_workers=2,
                      dataset=dict(pipeline=_pipeline))
test_dataloader = val_dataloader
""",
}


def plan(scale: str, work: str, device: str) -> List[dict]:
    """The steps, in order: name, what it shows, command, time limit (s)
    and the least time worth starting it with."""
    full = scale == 'full'
    cost = osp.join('tools', 'analysis_tools', 'benchmark_cost.py')
    vit = ('configs/vtab/vpt_deep_vit-b.py' if full else
           osp.join(work, 'smoke_vit.py'))
    swin = ('configs/vtab/vpt_deep_swin-b.py' if full else
            osp.join(work, 'smoke_swin.py'))
    setr = ('configs/setr/vpt_deep_vit-l_ade20k.py' if full else
            osp.join(work, 'smoke_setr.py'))
    dinov2 = ('configs/vtab/vpt_deep_dinov2-b14.py' if full else
              osp.join(work, 'smoke_dinov2.py'))
    batch = ['--batch-size', '64' if full else '2']
    size = ['--img-size', '224' if full else '32']
    tokens = ['1', '50', '200'] if full else ['2']
    steps = [
        dict(name='tier_core', what='cuda tier: fused == token, autocast, '
             'AMP steps', kind='pytest',
             cmd=[PY, '-m', 'pytest', 'tests/test_cuda.py', '-m', 'cuda',
                  '-k', 'not test_tool_', '-v', '-p', 'no:cacheprovider',
                  '--junitxml', osp.join(work, 'tier_core.xml')],
             timeout=150, least=30),
    ]
    for amp in ('fp32', 'bf16'):
        steps.append(dict(
            name=f'cost_vit_{amp}', kind='cost',
            what=f'ViT-B/16 cost, {amp} (Table 12 setting)',
            out=osp.join(work, f'cost_vit_{amp}'),
            cmd=[PY, cost, vit, *batch, *size, '--num-tokens', *tokens,
                 '--methods', 'full', 'linear', 'shallow', 'deep',
                 '--forms', 'token', 'fused', '--device', device,
                 '--repeats', '5' if full else '1',
                 '--infer-repeats', '10' if full else '1',
                 '--out-dir', osp.join(work, f'cost_vit_{amp}')] +
            ([] if amp == 'fp32' else ['--amp', 'bf16']),
            timeout=150, least=40))
    steps.append(dict(
        name='time_to_result', kind='ttr',
        what='VPT-Deep ViT-B/16, 1000 images, 100 epochs, bf16: launch to '
        'test accuracy', timeout=240 if full else 300, least=60))
    steps.append(dict(
        name='tier_tools', kind='pytest',
        what='cuda tier: the tools (dist_train nccl, resume after kill, '
        'infer, analysis, benchmark, sweep) on the device',
        cmd=[PY, '-m', 'pytest', 'tests/test_cuda.py', '-m', 'cuda', '-k',
             'test_tool_', '-v', '-p', 'no:cacheprovider', '--junitxml',
             osp.join(work, 'tier_tools.xml')],
        timeout=330, least=60))
    steps.append(dict(
        name='cost_swin', kind='cost', what='Swin-B cost, fp32',
        out=osp.join(work, 'cost_swin'),
        cmd=[PY, cost, swin, *batch, *size, '--num-tokens',
             *(['10', '50'] if full else ['1']), '--methods', 'full',
             'linear', 'deep', '--forms', 'token', 'fused', '--device',
             device, '--repeats', '5' if full else '1', '--infer-repeats',
             '10' if full else '1', '--out-dir', osp.join(work,
                                                           'cost_swin')],
        timeout=120, least=30))
    steps.append(dict(
        name='cost_dinov2', kind='cost',
        what='DINOv2-B/14 (timm) cost, fp32, next to ViT-B/16\'s',
        out=osp.join(work, 'cost_dinov2'),
        cmd=[PY, cost, dinov2, *batch, '--img-size', '224' if full else '28',
             '--num-tokens', *(['50'] if full else ['1']), '--methods',
             'full', 'linear', 'deep', '--forms', 'token', 'fused',
             '--device', device, '--repeats', '5' if full else '1',
             '--infer-repeats', '10' if full else '1', '--out-dir',
             osp.join(work, 'cost_dinov2')],
        timeout=120, least=30))
    steps.append(dict(
        name='time_to_result_in_memory', kind='ttr', in_memory=True,
        what='the same, the training set decoded once (InMemoryDataset)',
        timeout=150 if full else 300, least=60))
    steps.append(dict(
        name='cost_setr', kind='cost',
        what='SETR-PUP ViT-L cost at 512, batch 2, fp32',
        out=osp.join(work, 'cost_setr'),
        cmd=[PY, cost, setr, '--batch-size', '2', '--img-size',
             '512' if full else '32', '--num-tokens',
             *(['50'] if full else ['1']), '--methods', 'full', 'linear',
             'deep', '--forms', 'token', 'fused', '--device', device,
             '--repeats', '3' if full else '1', '--infer-repeats',
             '5' if full else '1', '--out-dir', osp.join(work,
                                                         'cost_setr')],
        timeout=120, least=30))
    return steps


def ttr_commands(scale: str, work: str, in_memory: bool = False) -> dict:
    """The preparation (data, stand-in checkpoint) and the timed run of the
    time-to-result step; with ``in_memory`` the training set is wrapped in
    :class:`~vpt_mm.datasets.InMemoryDataset` (decoded once)."""
    full = scale == 'full'
    data = osp.join(work, 'ttr_data')
    base = ('configs/vtab/vpt_deep_vit-b.py' if full else
            osp.join(work, 'smoke_ttr.py'))
    config, config_text = base, None
    if in_memory:
        config = osp.join(work, 'ttr_in_memory.py')
        config_text = (
            f"_base_ = [{osp.join(REPO, base) if full else base!r}]\n"
            "train_dataloader = dict(dataset=dict(\n"
            "    _delete_=True, type='InMemoryDataset',\n"
            "    dataset={{_base_.train_dataloader.dataset}}))\n")
    ckpt = osp.join(work, 'standin_vit.pth')
    per_class = '100' if full else '5'
    epochs = '100' if full else '2'
    run_dir = osp.join(work, 'ttr_in_memory' if in_memory else 'ttr_run')
    train = [PY, 'tools/train.py', config, '--task', 'eurosat',
             '--work-dir', run_dir, '--amp',
             '--cfg-options', f'data_root={osp.join(data, "vtab-1k")}',
             f'model.backbone.init_cfg.checkpoint={ckpt}',
             f'train_cfg.max_epochs={epochs}',
             f'train_cfg.val_interval={epochs}',
             f'param_scheduler.0.total={epochs}',
             'param_scheduler.0.warmup=' + ('10' if full else '1'),
             'default_hooks.checkpoint.interval=' + epochs]
    if full:
        train[train.index('--amp') + 1:train.index('--amp') + 1] = [
            '--amp-dtype', 'bfloat16']
        workers = 4 if in_memory else 12
        train += [f'train_dataloader.num_workers={workers}',
                  'val_dataloader.num_workers=12']
    return dict(
        prepare=[
            [PY, 'tools/dataset_converters/make_smoke_data.py', data,
             '--vtab-only', 'eurosat', '--per-class', per_class, '--size',
             '224' if full else '32'],
            [PY, 'tools/model_converters/standin_checkpoint.py', config,
             ckpt, '--task', 'eurosat'],
        ],
        train=train, work_dir=run_dir, config=config,
        config_text=config_text)


def run_step(cmd: List[str], timeout: float, log) -> dict:
    """Run one command (its own process group, killed at ``timeout``);
    status, return code, wall time and output."""
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep +
               os.environ.get('PYTHONPATH', ''), PYTHONUNBUFFERED='1')
    log.write(f'\n$ {" ".join(cmd)}\n')
    log.flush()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(timeout, 1))
        status = 'ok' if proc.returncode == 0 else 'failed'
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        status = 'timed out'
    log.write(out)
    log.flush()
    return dict(status=status, returncode=proc.returncode,
                wall_s=round(time.perf_counter() - start, 2), output=out)


def junit_summary(path: str) -> dict:
    """Counts and failures of a pytest --junitxml file."""
    if not osp.isfile(path):
        return dict(error=f'no junit report at {path}')
    root = ET.parse(path).getroot()
    counts = dict(passed=0, failed=0, skipped=0)
    failures = []
    for case in root.iter('testcase'):
        bad = case.find('failure')
        if bad is None:
            bad = case.find('error')
        if bad is not None:
            counts['failed'] += 1
            failures.append(dict(test=case.get('name'),
                                 message=(bad.get('message') or '')[:400]))
        elif case.find('skipped') is not None:
            counts['skipped'] += 1
        else:
            counts['passed'] += 1
    return dict(counts, failures=failures)


def verbose_summary(output: str) -> dict:
    """Counts and failures from ``pytest -v`` output, for a run killed
    before it wrote its junit report: the tests that finished."""
    import re
    counts = dict(passed=0, failed=0, skipped=0)
    failures = []
    for test, outcome in re.findall(
            r'^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR)', output, re.M):
        key = dict(PASSED='passed', SKIPPED='skipped').get(outcome, 'failed')
        counts[key] += 1
        if key == 'failed':
            failures.append(dict(test=test.split('::')[-1],
                                 message=outcome))
    return dict(counts, failures=failures,
                incomplete='stopped before the end: only the tests that '
                'finished are counted')


def cost_summary(out_dir: str) -> dict:
    """The benchmark's rows and the ratios the goals are about."""
    path = osp.join(out_dir, 'cost.json')
    if not osp.isfile(path):
        return dict(error=f'no {path}')
    with open(path) as f:
        report = json.load(f)
    rows = report['rows']

    def find(method, p=0, form='-'):
        return next((r for r in rows if r['method'] == method and
                     r['num_tokens'] == p and r['form'] == form), None)

    def ratio(row, base, mode, key):
        if not row or not base or not row[mode][key] or not base[mode][key]:
            return None
        return round(row[mode][key] / base[mode][key], 3)

    full, frozen = find('full'), find('linear')
    ratios = {}
    for row in rows:
        if row['method'] in ('full', 'linear'):
            continue
        key = f'{row["method"]}_p{row["num_tokens"]}_{row["form"]}'
        ratios[key] = dict(
            train_time_vs_full=ratio(row, full, 'train', 'ms_per_img'),
            train_peak_vs_full=ratio(row, full, 'train', 'peak_mb'),
            infer_time_vs_frozen=ratio(row, frozen, 'infer', 'ms_per_img'))
    return dict(device=report.get('device'), amp=report.get('amp'),
                timing=report.get('timing'), rows=rows, ratios=ratios,
                failed=report.get('failed', []))


def goals_of(cost: dict) -> Dict[str, dict]:
    """The issue's goals against one cost summary (VPT-Deep p=50 training,
    fused p=200 inference); each form reported, the fused (default) one
    decides."""
    ratios = cost.get('ratios') or {}
    out = {}
    for form in ('token', 'fused'):
        deep50 = ratios.get(f'deep_p50_{form}') or {}
        fused200 = ratios.get(f'deep_p200_{form}') or {}
        out[form] = dict(
            deep50_train_time=deep50.get('train_time_vs_full'),
            deep50_train_memory=deep50.get('train_peak_vs_full'),
            p200_infer_time=fused200.get('infer_time_vs_frozen'))
    fused = out['fused']

    def met(value, goal):
        return None if value is None else value <= goal

    out['met'] = dict(
        deep50_train_time=met(fused['deep50_train_time'],
                              GOALS['deep50_train_time']),
        deep50_train_memory=met(fused['deep50_train_memory'],
                                GOALS['deep50_train_memory']),
        fused200_infer_time=met(fused['p200_infer_time'],
                                GOALS['fused200_infer_time']))
    return out


def ttr_figures(work_dir: str, output: str) -> dict:
    """Test accuracy, iterations and the share of time spent waiting for
    data, from the run's log and mmengine's scalars.json."""
    import re
    acc = re.findall(r'accuracy/top1: ([0-9.]+)', output)
    scalars = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                        'scalars.json')))
    times, data_times = [], []
    if scalars:
        with open(scalars[-1]) as f:
            for line in f:
                rec = json.loads(line)
                if 'data_time' in rec and 'time' in rec and 'lr' in rec:
                    times.append(rec['time'])
                    data_times.append(rec['data_time'])
    out = dict(test_top1=float(acc[-1]) if acc else None,
               logged_iters=len(times))
    if times:
        out['mean_iter_s'] = round(sum(times) / len(times), 4)
        out['mean_data_s'] = round(sum(data_times) / len(data_times), 4)
        out['data_share'] = round(sum(data_times) / sum(times), 3)
    return out


def environment() -> dict:
    import torch

    import vpt_mm  # noqa: F401  (torchvision's ops load after it, for timm)
    env = dict(python=platform.python_version(), torch=torch.__version__,
               cuda=torch.version.cuda,
               cuda_available=torch.cuda.is_available(),
               cpu_count=os.cpu_count(), host=platform.node())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=torch.cuda.get_device_name(0),
                   gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   capability='.'.join(map(str, torch.cuda.
                                           get_device_capability(0))),
                   cudnn=torch.backends.cudnn.version())
        smi = shutil.which('nvidia-smi')
        if smi:
            q = subprocess.run([smi, '--query-gpu=driver_version',
                                '--format=csv,noheader'],
                               capture_output=True, text=True)
            env['driver'] = q.stdout.strip()
    else:
        env['gpu'] = None
    for name in ('mmengine', 'mmpretrain', 'mmseg', 'mmcv', 'timm'):
        try:
            env[name] = __import__(name).__version__
        except Exception as err:  # noqa: BLE001  (a report, not a check)
            env[name] = f'not importable: {type(err).__name__}'
    return env


def fmt_ratio(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.2f}x'


def markdown(report: dict) -> str:
    env = report['environment']
    where = env.get('gpu') or f'CPU ({env["cpu_count"]} cores)'
    lines = [f'# vpt_mm GPU check: {where}', '',
             f'- torch {env["torch"]} (CUDA {env["cuda"]}, cuDNN '
             f'{env.get("cudnn")}, driver {env.get("driver")}), mmengine '
             f'{env["mmengine"]}, mmpretrain {env["mmpretrain"]}, mmseg '
             f'{env["mmseg"]}, timm {env["timm"]}, Python {env["python"]}',
             f'- scale: {report["scale"]}; budget {report["budget_s"]} s; '
             f'total wall time {report["wall_s"]} s', '',
             '| step | status | wall s | what |', '|---|---|---|---|']
    for step in report['steps']:
        lines.append(f'| {step["name"]} | {step["status"]} | '
                     f'{step.get("wall_s", "-")} | {step["what"]} |')
    for step in report['steps']:
        lines += ['', f'## {step["name"]}: {step["status"]}', '',
                  f'`{step.get("command", "")}`']
        figures = step.get('figures') or {}
        if step['kind'] == 'pytest' and 'passed' in figures:
            lines.append(f'\n{figures["passed"]} passed, {figures["failed"]} '
                         f'failed, {figures["skipped"]} skipped' +
                         (f' ({figures["incomplete"]})'
                          if figures.get('incomplete') else ''))
            for fail in figures['failures']:
                lines.append(f'- FAILED {fail["test"]}: {fail["message"]}')
        if step['kind'] == 'cost' and figures.get('table'):
            lines += ['', f'{figures.get("device")}, {figures.get("amp")}, '
                      f'{figures.get("timing")}', '', figures['table']]
            lines += [f'- FAILED {f[:300]}' for f in figures.get('failed')
                      or []]
            goals = figures.get('goals')
            if goals:
                fused = goals['fused']
                met = goals['met']
                lines += ['', '| goal | fused form | token form | met |',
                          '|---|---|---|---|',
                          f'| VPT-Deep p=50 train time <= 0.70x Full | '
                          f'{fmt_ratio(fused["deep50_train_time"])} | '
                          f'{fmt_ratio(goals["token"]["deep50_train_time"])}'
                          f' | {met["deep50_train_time"]} |',
                          f'| VPT-Deep p=50 train peak <= 0.60x Full | '
                          f'{fmt_ratio(fused["deep50_train_memory"])} | '
                          f'{fmt_ratio(goals["token"]["deep50_train_memory"])}'
                          f' | {met["deep50_train_memory"]} |',
                          f'| p=200 inference <= 1.05x frozen | '
                          f'{fmt_ratio(fused["p200_infer_time"])} | '
                          f'{fmt_ratio(goals["token"]["p200_infer_time"])} | '
                          f'{met["fused200_infer_time"]} |']
        if step['kind'] == 'ttr' and figures:
            lines.append(
                f'\ntime to a result: {figures.get("wall_s")} s (goal <= '
                f'{GOALS["time_to_result_s"]:.0f} s: '
                f'{figures.get("met")}); test top-1 '
                f'{figures.get("test_top1")}; mean iteration '
                f'{figures.get("mean_iter_s")} s, of which waiting for data '
                f'{figures.get("mean_data_s")} s ({figures.get("data_share")}'
                f'); preparation (data, stand-in checkpoint) '
                f'{figures.get("prepare_s")} s, in the background, not '
                'counted')
        if step['status'] != 'ok' and step.get('tail'):
            lines += ['', '```', step['tail'], '```']
    return '\n'.join(lines) + '\n'


def table_of(output: str) -> str:
    return '\n'.join(line for line in output.splitlines()
                     if line.startswith('|'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', help='report.md, report.json and '
                        'gpu_check.log go here')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the plan, run nothing')
    parser.add_argument('--smoke', action='store_true',
                        help='toy sizes (tiny models, few images): checks '
                        'the script itself, on the CPU if there is no GPU')
    parser.add_argument('--budget', type=float, default=480,
                        help='wall-clock seconds for all steps (default: '
                        '480); a step that would start with less than its '
                        'minimum left is recorded as not run')
    parser.add_argument('--work-dir', help='intermediate files (default: a '
                        'temporary folder, removed at the end)')
    parser.add_argument('--only', nargs='+', help='run only these steps')
    args = parser.parse_args()
    import torch
    scale = 'smoke' if args.smoke else 'full'
    # The full plan is for a GPU (its --dry-run shows it as it would run).
    device = ('cuda' if torch.cuda.is_available() or scale == 'full' else
              'cpu')
    work = args.work_dir or tempfile.mkdtemp(prefix='vpt_mm_gpu_check_')
    steps = plan(scale, work, device)
    if args.only:
        unknown = set(args.only) - {s['name'] for s in steps}
        if unknown:
            parser.error(f'unknown steps {sorted(unknown)}; the steps are '
                         f'{[s["name"] for s in steps]}')
        steps = [s for s in steps if s['name'] in args.only]
    if args.dry_run:
        print(f'gpu_check plan ({scale}, device {device}, budget '
              f'{args.budget:.0f} s, work dir {work}):')
        for i, step in enumerate(steps, 1):
            print(f'{i}. {step["name"]} (limit {step["timeout"]} s): '
                  f'{step["what"]}')
            ttr = ttr_commands(scale, work, step.get('in_memory', False))
            cmds = (ttr['prepare'] + [ttr['train']]
                    if step['kind'] == 'ttr' else [step['cmd']])
            for cmd in cmds:
                print('   $ ' + ' '.join(cmd))
        print(f'writes {osp.join(args.out_dir, "report.md")}, report.json, '
              'gpu_check.log')
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
        return
    if not torch.cuda.is_available() and not args.smoke:
        parser.error('no CUDA GPU here: the full check needs one (use '
                     '--smoke to check the script on the CPU, or --dry-run '
                     'to see the plan)')
    os.makedirs(args.out_dir, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    if args.smoke:
        for name, text in SMOKE_CONFIGS.items():
            with open(osp.join(work, f'smoke_{name}.py'), 'w') as f:
                f.write(text)
    start = time.perf_counter()
    report = dict(scale=scale, budget_s=args.budget,
                  environment=environment(), goals=GOALS, steps=[])
    print(f'[gpu_check] {report["environment"].get("gpu") or "no GPU"}; '
          f'{len(steps)} steps, budget {args.budget:.0f} s', flush=True)
    log_path = osp.join(args.out_dir, 'gpu_check.log')
    prep = Preparation(ttr_commands(scale, work)['prepare'], 300)
    if any(step['kind'] == 'ttr' for step in steps):
        prep.start()
    with open(log_path, 'w') as log:
        for step in steps:
            left = args.budget - (time.perf_counter() - start)
            entry = dict(name=step['name'], what=step['what'],
                         kind=step['kind'])
            report['steps'].append(entry)
            if left < step['least']:
                entry['status'] = 'not run (out of time)'
                print(f'[gpu_check] {step["name"]}: not run, {left:.0f} s '
                      'left', flush=True)
                continue
            limit = min(step['timeout'], left)
            try:
                if step['kind'] == 'ttr':
                    run_ttr(scale, work, limit, log, entry, prep,
                            step.get('in_memory', False))
                else:
                    entry['command'] = ' '.join(step['cmd'])
                    result = run_step(step['cmd'], limit, log)
                    entry.update(status=result['status'],
                                 wall_s=result['wall_s'])
                    figures: dict = {}
                    if step['kind'] == 'pytest':
                        junit = step['cmd'][step['cmd'].index('--junitxml') +
                                            1]
                        figures = (junit_summary(junit) if osp.isfile(junit)
                                   else verbose_summary(result['output']))
                    elif step['kind'] == 'cost':
                        figures = cost_summary(step['out'])
                        figures['table'] = table_of(result['output'])
                        if 'ratios' in figures:
                            figures['goals'] = goals_of(figures)
                    entry['figures'] = figures
                    if result['status'] != 'ok':
                        entry['tail'] = result['output'][-3000:]
            except Exception as err:  # noqa: BLE001  (record, go on)
                entry.update(status='error', tail=repr(err))
            print(f'[gpu_check] {step["name"]}: {entry["status"]} '
                  f'({entry.get("wall_s", "-")} s)', flush=True)
            report['wall_s'] = round(time.perf_counter() - start, 1)
            write_reports(report, args.out_dir)  # partial reports survive
    report['wall_s'] = round(time.perf_counter() - start, 1)
    write_reports(report, args.out_dir)
    if prep.is_alive():
        prep.join(60)
    print(f'[gpu_check] done in {report["wall_s"]} s; wrote '
          f'{osp.join(args.out_dir, "report.md")}, report.json, '
          'gpu_check.log', flush=True)
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    incomplete = [f'{s["name"]}: {s["status"]}' for s in report['steps']
                  if s['status'] != 'ok']
    if incomplete:  # the reports are written; the exit status says so too
        raise SystemExit('[gpu_check] not every step ran through: ' +
                         '; '.join(incomplete))


class Preparation(threading.Thread):
    """The time-to-result task's data and stand-in checkpoint, made in the
    background (CPU work) while the first steps run, so that they do not
    take from the budget."""

    def __init__(self, cmds: List[List[str]], timeout: float) -> None:
        super().__init__(daemon=True)
        self.cmds, self.timeout = cmds, timeout
        self.output = io.StringIO()
        self.failed: Optional[dict] = None
        self.wall_s: Optional[float] = None
        self.reported = False

    def run(self) -> None:
        start = time.perf_counter()
        for cmd in self.cmds:
            result = run_step(cmd, self.timeout, self.output)
            if result['status'] != 'ok':
                self.failed = dict(result, command=' '.join(cmd))
                break
        self.wall_s = round(time.perf_counter() - start, 1)


def run_ttr(scale: str, work: str, limit: float, log, entry: dict,
            prep: Preparation, in_memory: bool = False) -> None:
    """Wait for the task's preparation, then time the training run."""
    cmds = ttr_commands(scale, work, in_memory)
    if cmds['config_text']:
        with open(cmds['config'], 'w') as f:
            f.write(cmds['config_text'])
    wait_start = time.perf_counter()
    prep.join(limit)
    waited = round(time.perf_counter() - wait_start, 1)
    if not prep.reported:  # its output once, in the order of the steps
        log.write(prep.output.getvalue())
        prep.reported = True
    if prep.is_alive() or prep.failed:
        failed = prep.failed or {}
        entry.update(status=f'preparation {failed.get("status", "timed out")}',
                     command=failed.get('command', ''),
                     tail=failed.get('output', '')[-3000:])
        return
    entry['command'] = ' '.join(cmds['train'])
    result = run_step(cmds['train'], limit - waited, log)
    figures = ttr_figures(cmds['work_dir'], result['output'])
    figures.update(wall_s=result['wall_s'], prepare_s=prep.wall_s)
    ok = result['status'] == 'ok' and figures['test_top1'] is not None
    figures['met'] = (result['wall_s'] <= GOALS['time_to_result_s']
                      if ok else None)
    entry.update(status=result['status'], wall_s=result['wall_s'],
                 figures=figures)
    if result['status'] == 'ok' and figures['test_top1'] is None:
        entry['status'] = 'failed (no test accuracy in the log)'
    if entry['status'] != 'ok':
        entry['tail'] = result['output'][-3000:]


def write_reports(report: dict, out_dir: str) -> None:
    from vpt_mm.fileio import atomic_write_text
    atomic_write_text(osp.join(out_dir, 'report.json'),
                      json.dumps(report, indent=1, default=str))
    atomic_write_text(osp.join(out_dir, 'report.md'), markdown(report))


if __name__ == '__main__':
    main()
