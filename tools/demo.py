"""The 2-minute CPU demo: VPT-Deep vs a linear probe on a frozen backbone.

1. Pre-train a tiny ViT on the digits 0-4 of scikit-learn's bundled
   handwritten digits (all parameters train).
2. Freeze it and transfer it to the digits 5-9 (classes it never saw) with
   VPT-Deep: only 8 prompts per layer and the linear head train.
3. Same frozen backbone, linear probe only (no prompts).

Every step runs ``tools/train.py`` with a config of ``configs/demo/``.

Example:
    python tools/demo.py
"""
import argparse
import os.path as osp
import re
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
STEPS = (
    ('pre-train ViT on digits 0-4', 'pretrain_vit-tiny_digits-0to4.py'),
    ('VPT-Deep on digits 5-9', 'vpt-deep_vit-tiny_digits-5to9.py'),
    ('linear probe on digits 5-9', 'linear_vit-tiny_digits-5to9.py'),
)
ACCURACY = re.compile(r'accuracy/top1: ([0-9.]+)')


def train(config: str) -> float:
    """Run tools/train.py on a demo config; return the final accuracy."""
    cmd = [sys.executable, osp.join(REPO, 'tools', 'train.py'),
           osp.join(REPO, 'configs', 'demo', config)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f'{" ".join(cmd)} failed')
    found = ACCURACY.findall(proc.stdout + proc.stderr)
    if not found:
        raise SystemExit(f'{config}: no accuracy in the training log')
    return float(found[-1])


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    results = []
    for title, config in STEPS:
        start = time.time()
        print(f'[demo] {title}: python tools/train.py configs/demo/{config}',
              flush=True)
        acc = train(config)
        print(f'[demo]   top-1 accuracy {acc:.2f}% '
              f'({time.time() - start:.0f} s)', flush=True)
        results.append((title, acc))
    print('\n[demo] transfer to unseen digits 5-9 (chance: 20%):')
    for title, acc in results[1:]:
        print(f'[demo]   {title:<28} {acc:6.2f}%')


if __name__ == '__main__':
    main()
