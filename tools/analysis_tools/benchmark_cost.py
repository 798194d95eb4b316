"""Training and inference cost of the tuning protocols, in the shape of the
paper's Table 12 and Fig. 18-19.

For Full, Linear, VPT-Shallow, VPT-Deep (token and fused form,
vpt_mm/prompts/fused.py, and with ``--forms ... fused+cp`` the fused form
with activation checkpointing) and VPT-prefix (ViT and Swin) at several
prompt lengths, it measures:

- training latency: one step (forward, loss, backward, SGD with momentum),
  ms per image, median of ``--repeats`` after a warm-up step;
- inference latency: one eval forward without gradients, ms per image;
- peak memory of each: ``torch.cuda.max_memory_allocated`` on CUDA, the
  process's peak resident set (``ru_maxrss``) on CPU. Every measurement
  runs in a fresh process, so peaks do not carry over. The memory already
  in use once the model is built (libraries, weights, input) is recorded
  too, and the table also gives the ratio of what training adds on top of
  it ("step memory"), which on CPU is otherwise dominated by the shared
  libraries and the frozen weights;
- what autograd saves for the backward pass of one training forward
  ("saved MB", :func:`vpt_mm.tuning.saved_activations`): exact, and free of
  the allocator's retention of freed memory that peak RSS includes.

With ``--interleave`` the times come instead from one process that holds
every variant and times one step of each in turn, which keeps the ratios
stable on a noisy machine (memory still comes from one process per variant).

It prints a table and the ratios to Full (training) and to the frozen
backbone without prompts (inference, the Linear row), all from one run, and
writes ``cost.json`` and ``cost.png`` to ``--out-dir``. The model is the
config's, without pretrained weights (random init costs the same).

Example:
    python tools/analysis_tools/benchmark_cost.py \
        configs/vtab/vpt_deep_vit-b.py --batch-size 8 \
        --num-tokens 1 10 50 100 200 --out-dir work_dirs/cost
"""
import argparse
import contextlib
import copy
import gc
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Optional

import torch
from mmengine.config import DictAction

import vpt_mm  # noqa: F401  (compatibility fixes first, registration)
from vpt_mm.devices import add_device_arg
from vpt_mm.fileio import atomic_save, write_json
from vpt_mm.tuning import saved_activations

METHODS = ('full', 'linear', 'shallow', 'deep', 'prefix')
FORMS = ('token', 'fused', 'fused+cp')
TITLES = dict(full='Full', linear='Linear', shallow='VPT-Shallow',
              deep='VPT-Deep', prefix='VPT-prefix')


def build_model(model_cfg: dict, method: str, num_tokens: int, fused: bool,
                scope: str = 'mmpretrain', with_cp: bool = False):
    """The model of one protocol (an mmpretrain classifier or an mmseg
    segmentor), without pretrained weights; ``with_cp``: activation
    checkpointing of the prompted backbone's blocks."""
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope

    from vpt_mm.backbones.frozen import unprompted_model_cfg
    init_default_scope(scope)
    cfg = copy.deepcopy(model_cfg)
    backbone = cfg['backbone']
    backbone.pop('init_cfg', None)
    if 'tuning' in cfg:  # a TunedClassifier: the protocol of the method
        cfg['tuning'] = dict(
            type=dict(full='Full', linear='Linear').get(method, 'VPT'))
    if method in ('full', 'linear'):
        cfg = unprompted_model_cfg(cfg)
    else:
        prompt_cfg = dict(backbone.get('prompt_cfg') or {})
        prompt_cfg.update(num_tokens=num_tokens,
                          deep=method in ('deep', 'prefix'))
        prompt_cfg.pop('layers', None)
        if method == 'prefix':  # learnt keys/values at every layer
            prompt_cfg['location'] = 'prefix'
            prompt_cfg.pop('proj_dim', None)
            if backbone.get('out_type') in ('avg_prompt', 'avg_all'):
                # No prompt tokens to pool: the image tokens' mean.
                backbone['out_type'] = 'avg_featmap'
        backbone.update(prompt_cfg=prompt_cfg)
        if fused or has_fused_form(backbone['type']):
            backbone.update(fuse_prompts=fused)
        if with_cp:
            backbone.update(with_cp=True)
    model = revert_sync_batchnorm(MODELS.build(cfg))
    if method == 'linear':
        for p in model.backbone.parameters():
            p.requires_grad = False
    return model


def has_fused_form(backbone_type: str) -> bool:
    """Whether a prompted backbone has the fused form (PromptedViT,
    PromptedSwin)."""
    from vpt_mm.registry import PRETRAIN_MODELS
    return hasattr(PRETRAIN_MODELS.get(backbone_type), 'fuse')


def make_samples(model, batch: int, size: List[int], device: str) -> list:
    """Ground truth for a loss step: labels for a classifier, label maps
    for a segmentor."""
    if hasattr(model, 'decode_head'):
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        num_classes = model.decode_head.num_classes
        samples = []
        for _ in range(batch):
            sample = SegDataSample(metainfo=dict(
                img_shape=tuple(size), pad_shape=tuple(size),
                ori_shape=tuple(size)))
            sample.gt_sem_seg = PixelData(data=torch.randint(
                0, num_classes, (1, *size), device=device))
            samples.append(sample)
        return samples
    from mmpretrain.structures import DataSample
    num_classes = model.head.num_classes
    return [
        DataSample().set_gt_label(i % num_classes).to(device)
        for i in range(batch)
    ]


def on_cuda(device: str) -> bool:
    return torch.device(device).type == 'cuda'


def peak_memory_mb(device: str) -> float:
    if on_cuda(device):
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """The process's resident set now (Linux), in MB."""
    with open('/proc/self/statm') as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf('SC_PAGE_SIZE') / 2**20


def prepare(job: dict):
    """Build the model of a job and return its step function."""
    device = job['device']
    model = build_model(job['model'], job['method'], job['num_tokens'],
                        job['fused'], job['scope'],
                        job.get('with_cp', False)).to(device)
    batch, size = job['batch_size'], job['img_size']
    x = torch.rand(batch, 3, *size, device=device)
    samples = make_samples(model, batch, size, device)
    amp = job.get('amp')
    dtype = dict(bf16=torch.bfloat16, fp16=torch.float16).get(amp)

    def autocast():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=dtype)

    if job['mode'] == 'train':
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optim = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
        # fp16 needs loss scaling (mmengine's AmpOptimWrapper does the same).
        scaler = (torch.amp.GradScaler(torch.device(device).type)
                  if amp == 'fp16' else None)

        def loss():
            with autocast():
                return sum(model(x, samples, mode='loss').values())

        def step():
            optim.zero_grad()
            if scaler is None:
                loss().backward()
                optim.step()
                return
            scaler.scale(loss()).backward()
            scaler.step(optim)
            scaler.update()

        def saved_mb() -> float:
            with saved_activations(model) as saved:
                loss()
            return sum(saved.values()) / 2**20

        step.saved_mb = saved_mb
    else:
        model.eval()

        def step():
            with torch.no_grad(), autocast():
                model(x, mode='tensor')

    return step


def timed(step, device: str) -> float:
    if on_cuda(device):
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if on_cuda(device):
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(job: dict) -> dict:
    """Time one job and its peak memory (in this process)."""
    device = job['device']
    if on_cuda(device):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step = prepare(job)
    base_mb = (torch.cuda.memory_allocated(device) / 2**20
               if on_cuda(device) else current_rss_mb())
    step()  # warm-up
    times = sorted(timed(step, device) for _ in range(job['repeats']))
    ms = 1000 * times[len(times) // 2] / job['batch_size']
    peak = peak_memory_mb(device)  # before the count's extra forward
    saved = step.saved_mb() if hasattr(step, 'saved_mb') else None
    return dict(ms_per_img=ms, peak_mb=peak, base_mb=base_mb,
                saved_mb=saved)


def measure_interleaved(jobs: List[dict]) -> List[float]:
    """Time several jobs in one process, one step of each in turn, so that
    the machine's drift affects them alike; ms per image of each."""
    steps = [prepare(job) for job in jobs]
    for step in steps:
        step()  # warm-up
    device = jobs[0]['device']
    times: List[List[float]] = [[] for _ in jobs]
    for _ in range(jobs[0]['repeats']):
        for i, step in enumerate(steps):
            times[i].append(timed(step, device))
    return [
        1000 * sorted(t)[len(t) // 2] / job['batch_size']
        for t, job in zip(times, jobs)
    ]


def run_job(job, in_process: bool = False):
    """Measure in a fresh process (clean peak memory), or with
    ``in_process`` in this one (on CUDA, where the allocator's peak is reset
    per job); ``job`` may be a list of jobs to time interleaved."""
    what = 'interleaved timing' if isinstance(job, list) else (
        f'{job["method"]} p={job["num_tokens"]} {job["mode"]}')
    if in_process:
        gc.collect()
        try:
            return (measure_interleaved(job)
                    if isinstance(job, list) else measure(job))
        except Exception as err:  # e.g. out of memory: the next one runs
            # (measure() empties the allocator's cache before each job)
            raise RuntimeError(f'Measurement {what} failed: {err!r}') from err
    proc = subprocess.run(
        [sys.executable, __file__, '--child', json.dumps(job)],
        capture_output=True,
        text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'Measurement {what} failed:\n'
                           f'{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def variants(methods: List[str], tokens: List[int],
             forms: List[str]) -> List[dict]:
    out = []
    for method in methods:
        if method in ('full', 'linear'):
            out.append(dict(method=method, num_tokens=0, form='-'))
            continue
        for p in tokens:
            # VPT-Shallow has nothing to fuse: its prompts interact with the
            # image from layer 1 on; VPT-prefix has no token form.
            if method == 'shallow':
                chosen = ['token']
            elif method == 'prefix':
                chosen = [f for f in forms if f != 'token'] or ['fused']
            else:
                chosen = forms
            for form in chosen:
                out.append(dict(method=method, num_tokens=p, form=form))
    return out


def fmt(value: Optional[float], digits: int = 1) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def ratio(value: Optional[float], base: Optional[float]) -> str:
    if value is None or not base:
        return '-'
    return f'{value / base:.2f}x'


def step_mb(row: dict) -> Optional[float]:
    """Training memory on top of the built model."""
    if row['train']['peak_mb'] is None:
        return None
    return row['train']['peak_mb'] - row['train']['base_mb']


def report(rows: List[dict]) -> str:
    """The table: costs and their ratios to Full (training) and to the
    frozen backbone (inference, the Linear row)."""
    full = next((r for r in rows if r['method'] == 'full'), None)
    frozen = next((r for r in rows if r['method'] == 'linear'), None)

    def of_full(r: dict, key: str) -> str:
        return ratio(r['train'][key], full and full['train'][key])

    lines = [
        '| method | p | form | train ms/img | train / Full | train peak MB '
        '| peak / Full | step mem / Full | saved MB | saved / Full '
        '| infer ms/img | infer / frozen |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        train, infer = r['train'], r['infer']
        lines.append(
            f'| {TITLES[r["method"]]} | {r["num_tokens"] or "-"} | '
            f'{r["form"]} | {fmt(train["ms_per_img"])} | '
            f'{of_full(r, "ms_per_img")} | {fmt(train["peak_mb"], 0)} | '
            f'{of_full(r, "peak_mb")} | '
            f'{ratio(step_mb(r), full and step_mb(full))} | '
            f'{fmt(train.get("saved_mb"))} | {of_full(r, "saved_mb")} | '
            f'{fmt(infer["ms_per_img"])} | '
            f'{ratio(infer["ms_per_img"], frozen and frozen["infer"]["ms_per_img"])} |'  # noqa: E501
        )
    return '\n'.join(lines)


def plot(rows: List[dict], path: str) -> None:
    """Fig. 18-19: cost against prompt length, Full/Linear as levels."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = [('train', 'ms_per_img', 'training latency (ms/img)'),
              ('infer', 'ms_per_img', 'inference latency (ms/img)'),
              ('train', 'peak_mb', 'training peak memory (MB)')]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (mode, key, title) in zip(axes, panels):
        for method, form, style in (('shallow', 'token', 'o-'),
                                    ('deep', 'token', 's-'),
                                    ('deep', 'fused', 's--')):
            pts = [(r['num_tokens'], r[mode][key]) for r in rows
                   if r['method'] == method and r['form'] == form
                   and r[mode][key] is not None]
            if pts:
                label = TITLES[method] + (' (fused)' if form == 'fused' else
                                          '')
                ax.plot(*zip(*sorted(pts)), style, label=label)
        for method, color in (('full', 'k'), ('linear', 'gray')):
            for r in rows:
                if r['method'] == method and r[mode][key] is not None:
                    ax.axhline(r[mode][key], color=color, linestyle=':',
                               label=TITLES[method])
        ax.set_xscale('log')
        ax.set_xlabel('prompt length p')
        ax.set_title(title)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
            break
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100, format='png'))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='?', help='config of the model')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--img-size', type=int, nargs='+', default=[224])
    parser.add_argument(
        '--num-tokens', type=int, nargs='+', default=[1, 10, 50, 100, 200])
    parser.add_argument(
        '--methods', nargs='+', choices=METHODS,
        help='default: all (VPT-prefix with ViT configs only)')
    parser.add_argument(
        '--forms', nargs='+', choices=FORMS, default=['token', 'fused'],
        help="'fused+cp': the fused form with activation checkpointing "
        '(with_cp=True)')
    parser.add_argument(
        '--repeats', type=int, default=3, help='timed training steps')
    parser.add_argument(
        '--infer-repeats', type=int, default=10,
        help='timed inference batches (cheaper and noisier than steps)')
    parser.add_argument(
        '--modes', nargs='+', choices=['train', 'infer'],
        default=['train', 'infer'])
    parser.add_argument(
        '--interleave', action='store_true',
        help='time all variants of a mode in one process, one step of each '
        'in turn (more reliable ratios on a noisy machine); memory still '
        'comes from one process per variant')
    parser.add_argument(
        '--rounds', type=int, default=1,
        help='measure every variant this many times, round-robin, and '
        'keep the median time (and the largest peak): on a noisy machine '
        'drift then affects all variants alike')
    add_device_arg(parser)
    parser.add_argument(
        '--amp', choices=('bf16', 'fp16'),
        help='measure under autocast in this dtype (fp16 with loss '
        'scaling), as --amp of tools/train.py; default: fp32')
    parser.add_argument(
        '--fresh-processes', action='store_true',
        help='on CUDA too, measure each variant in a fresh process (on CPU '
        'always: peak RSS cannot be reset); by default CUDA measurements '
        'share one process, the allocator\'s peak reset for each')
    parser.add_argument('--out-dir', help='write cost.json and cost.png here')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config keys, e.g. model.backbone.arch=b')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        job = json.loads(args.child)
        result = (measure_interleaved(job)
                  if isinstance(job, list) else measure(job))
        print(json.dumps(result))
        return
    if args.config is None:
        raise SystemExit('a config is required')
    from vpt_mm.config import config_from_file
    cfg = config_from_file(args.config, args.cfg_options)
    model_cfg = cfg.model.to_dict()
    size = args.img_size * 2 if len(args.img_size) == 1 else args.img_size
    forms = args.forms
    methods = args.methods or list(METHODS)
    if not has_fused_form(model_cfg['backbone']['type']):
        forms = ['token']  # only PromptedViT and PromptedSwin have one
        if args.methods is None:  # nor VPT-prefix
            methods.remove('prefix')
    rows: List[Dict] = [
        dict(var) for var in variants(methods, args.num_tokens, forms)
    ]

    def job(row: dict, mode: str, repeats: int) -> dict:
        return dict(model=model_cfg, scope=cfg.get('default_scope',
                                                   'mmpretrain'),
                    method=row['method'],
                    num_tokens=row['num_tokens'],
                    fused=row['form'] != 'token',
                    with_cp=row['form'] == 'fused+cp', mode=mode,
                    batch_size=args.batch_size, img_size=size[:2],
                    repeats=repeats, device=args.device, amp=args.amp)

    in_process = on_cuda(args.device) and not args.fresh_processes

    repeats = dict(train=args.repeats, infer=args.infer_repeats)
    results: Dict[tuple, List[dict]] = {}
    # A measurement that fails (out of memory, a kernel error) is reported
    # and the others still run; the tool then exits with an error.
    failed: List[str] = []
    for round_ in range(args.rounds):
        for i, row in enumerate(rows):
            for mode in args.modes:
                # With --interleave these runs only measure memory.
                try:
                    result = run_job(
                        job(row, mode,
                            1 if args.interleave else repeats[mode]),
                        in_process)
                except RuntimeError as err:
                    failed.append(str(err))
                    row.setdefault('errors', {})[mode] = str(err)[-1000:]
                    print(err, flush=True)
                    continue
                results.setdefault((i, mode), []).append(result)
                print(f'[{round_ + 1}/{args.rounds}] '
                      f'{TITLES[row["method"]]} p={row["num_tokens"]} '
                      f'{row["form"]} {mode}: '
                      f'{result["ms_per_img"]:.1f} ms/img', flush=True)
    interleaved: Dict[tuple, float] = {}
    if args.interleave and not failed:
        for mode in args.modes:
            jobs = [job(row, mode, repeats[mode]) for row in rows]
            try:
                for i, ms in enumerate(run_job(jobs, in_process)):
                    interleaved[(i, mode)] = ms
            except RuntimeError as err:
                failed.append(str(err))
                print(err, flush=True)
                continue
            print(f'interleaved {mode} timing done', flush=True)
    for i, row in enumerate(rows):
        for mode in ('train', 'infer'):
            runs = results.get((i, mode))
            if not runs:
                row[mode] = dict(ms_per_img=None, peak_mb=None, base_mb=None,
                                 saved_mb=None)
                continue
            times = sorted(r['ms_per_img'] for r in runs)
            row[mode] = dict(
                ms_per_img=interleaved.get((i, mode),
                                           times[len(times) // 2]),
                peak_mb=max(r['peak_mb'] for r in runs),
                base_mb=min(r['base_mb'] for r in runs),
                saved_mb=runs[0]['saved_mb'])
    device = (torch.cuda.get_device_name(args.device)
              if on_cuda(args.device) else f'CPU ({os.cpu_count()} cores)')
    timing = ('interleaved in one process' if args.interleave else
              'one process' if in_process else 'one process per variant')
    print(f'\n{osp.basename(args.config)}, batch {args.batch_size}, '
          f'{size[0]}x{size[1]}, {device}; timing: {timing}; memory: '
          f'{"max_memory_allocated" if on_cuda(args.device) else "peak RSS"}'
          f'; {args.amp or "fp32"}')
    print(report(rows))
    if args.out_dir:
        write_json(dict(config=args.config, batch_size=args.batch_size,
                        img_size=size[:2], device=device,
                        amp=args.amp or 'fp32', timing=timing, rows=rows,
                        failed=failed),
                   osp.join(args.out_dir, 'cost.json'))
        plot(rows, osp.join(args.out_dir, 'cost.png'))
        print(f'wrote {args.out_dir}/cost.json and cost.png')
    if failed:
        raise SystemExit(f'{len(failed)} measurement(s) failed (their rows '
                         'read "-"):\n' + '\n'.join(f[:500] for f in failed))


if __name__ == '__main__':
    main()
