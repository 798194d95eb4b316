"""The 2-minute CPU demo: the paper's Table 1 in miniature.

1. Pre-train a tiny ViT on the digits 0-4 of scikit-learn's bundled
   handwritten digits (all parameters train).
2. Transfer it to the digits 5-9 (classes it never saw) with the paper's
   four protocols, 3 seeds each: Full fine-tuning (every parameter), Linear
   (the head only, frozen backbone), VPT-Shallow (8 prompts at the first
   layer + head) and VPT-Deep (8 prompts at every layer + head).
3. Print the table (mean ± std over seeds) and write it, with a bar chart,
   to ``work_dirs/demo/table1.{md,png}``.

Every run is ``tools/train.py`` with a config of ``configs/demo/``, one
thread per run; ``--jobs`` runs that many at once (the numbers do not depend
on it).

Example:
    python tools/demo.py
"""
import argparse
import os
import os.path as osp
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
PRETRAIN = ('pre-train ViT on digits 0-4', 'pretrain_vit-tiny_digits-0to4.py')
METHODS = (
    ('Full', 'full_vit-tiny_digits-5to9.py'),
    ('Linear', 'linear_vit-tiny_digits-5to9.py'),
    ('VPT-Shallow', 'vpt-shallow_vit-tiny_digits-5to9.py'),
    ('VPT-Deep', 'vpt-deep_vit-tiny_digits-5to9.py'),
)
SEEDS = (0, 1, 2)
OUT = osp.join('work_dirs', 'demo')
ACCURACY = re.compile(r'accuracy/top1: ([0-9.]+)')


def train(config: str, *args: str) -> float:
    """Run tools/train.py on a demo config with one thread; return the final
    accuracy."""
    cmd = [sys.executable, osp.join(REPO, 'tools', 'train.py'),
           osp.join(REPO, 'configs', 'demo', config), *args]
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f'{" ".join(cmd)} failed')
    found = ACCURACY.findall(proc.stdout + proc.stderr)
    if not found:
        raise SystemExit(f'{config}: no accuracy in the training log')
    return float(found[-1])


def transfer(job: tuple) -> float:
    """One (method, config, seed) transfer run."""
    method, config, seed = job
    work_dir = osp.join(OUT, config[:-len('.py')], f'seed{seed}')
    return train(config, '--work-dir', work_dir, '--cfg-options',
                 f'randomness.seed={seed}')


def table(results: dict) -> list:
    """Markdown lines: per-seed top-1 and mean ± std of each method."""
    lines = ['| digits 5-9 (chance 20%) | ' +
             ' | '.join(f'seed {s}' for s in SEEDS) + ' | mean ± std |',
             '|---|' + '---:|' * (len(SEEDS) + 1)]
    for method, accs in results.items():
        mean, std = np.mean(accs), np.std(accs, ddof=1)
        lines.append(f'| {method} | ' + ' | '.join(f'{a:.1f}' for a in accs)
                     + f' | {mean:.1f} ± {std:.1f} |')
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--jobs', type=int, default=os.cpu_count() or 1,
        help='transfer runs at once (default: the number of CPU cores)')
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error('--jobs must be at least 1')
    start = time.time()
    title, config = PRETRAIN
    print(f'[demo] {title}: python tools/train.py configs/demo/{config}',
          flush=True)
    acc = train(config)
    print(f'[demo]   top-1 accuracy {acc:.2f}% ({time.time() - start:.0f} s)',
          flush=True)
    jobs = [(m, c, s) for m, c in METHODS for s in SEEDS]
    print(f'[demo] transfer to the unseen digits 5-9: {len(METHODS)} '
          f'protocols x {len(SEEDS)} seeds, {args.jobs} at a time '
          '(python tools/train.py configs/demo/<protocol>_vit-tiny_digits-'
          '5to9.py --cfg-options randomness.seed=S)', flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        accs = list(pool.map(transfer, jobs))
    results = {}
    for (method, _, _), acc in zip(jobs, accs):
        results.setdefault(method, []).append(acc)
    lines = table(results)
    os.makedirs(OUT, exist_ok=True)
    from vpt_mm.fileio import atomic_write_text
    atomic_write_text(osp.join(OUT, 'table1.md'), '\n'.join(lines) + '\n')
    from vpt_mm.evaluation.figures import plot_bars
    plot_bars([dict(name=m, mean=float(np.mean(a)),
                    std=float(np.std(a, ddof=1)))
               for m, a in results.items()],
              'digits 0-4 ViT transferred to digits 5-9, '
              f'{len(SEEDS)} seeds', 'top-1 (%)',
              osp.join(OUT, 'table1.png'))
    print('\n'.join(f'[demo] {line}' for line in lines))
    print(f'[demo] written to {OUT}/table1.md and table1.png '
          f'({time.time() - start:.0f} s in all)')


if __name__ == '__main__':
    main()
