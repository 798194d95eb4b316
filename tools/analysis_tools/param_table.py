"""Tuned parameters and "total parameters for N tasks" per protocol, as in
the paper's Table 1.

Every protocol that fits the backbone is counted on randomly initialised
models (no checkpoint needed) over the VTAB-1k and FGVC tasks (their class
counts from vpt_mm/datasets/benchmarks.py). VPT rows use one prompt length
for every task (--num-tokens) or each task's chosen one from sweep results
(--hparams work_dirs/sweep/*/hparams.json).

Examples:
    python tools/analysis_tools/param_table.py --backbone vit-b16
    python tools/analysis_tools/param_table.py --backbone swin-b \
        --num-tokens 10 --benchmarks vtab1k
    python tools/analysis_tools/param_table.py --hparams \
        work_dirs/sweep/vpt_deep_vit-b/hparams.json \
        work_dirs/sweep/vpt_deep_vit-b-fgvc/hparams.json
"""
import argparse
import json
from typing import Dict, List

import vpt_mm  # noqa: F401  (compatibility fixes first, registration)
from vpt_mm.datasets import get_task, tasks_of
from vpt_mm.tuning.table import BACKBONES, format_table, protocol_cost

ROWS = [
    ('Full', dict(type='Full'), None),
    ('Linear', dict(type='Linear'), None),
    ('Partial-1', dict(type='Partial', k=1), None),
    ('Mlp-3', dict(type='Mlp', num_layers=3), None),
    ('Sidetune', dict(type='Sidetune'), None),
    ('Bias', dict(type='Bias'), None),
    ('Adapter r=8', dict(type='Adapter', reduction=8), None),
    ('Adapter r=64', dict(type='Adapter', reduction=64), None),
    ('Adapter r=256', dict(type='Adapter', reduction=256), None),
    ('VPT-Shallow', dict(type='VPT'), False),
    ('VPT-Deep', dict(type='VPT'), True),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--backbone', default='vit-b16',
                        choices=sorted(BACKBONES))
    parser.add_argument('--benchmarks', nargs='+',
                        default=['vtab1k', 'fgvc'], choices=['vtab1k', 'fgvc'])
    parser.add_argument('--num-tokens', type=int, default=50,
                        help='p of every task (default 50)')
    parser.add_argument('--hparams', nargs='+', default=[],
                        help="sweep hparams.json files: each task's p")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    tasks = [t for b in args.benchmarks for t in tasks_of(b)]
    chosen: Dict[str, int] = {}
    for path in args.hparams:
        with open(path) as f:
            for task, best in json.load(f).items():
                if 'num_tokens' in best:
                    chosen[task] = int(best['num_tokens'])
    tokens = [chosen.get(t, args.num_tokens) for t in tasks]
    classes = [get_task(t).num_classes for t in tasks]
    rows: List = []
    for name, tuning, deep in ROWS:
        deep = bool(deep)
        if name == 'VPT-Shallow' and args.backbone in ('convnext-b',
                                                       'resnet-50'):
            name = 'VPT (pixel frame)'
        elif name == 'VPT-Deep' and args.backbone in ('convnext-b',
                                                      'resnet-50'):
            continue
        try:
            rows.append(protocol_cost(args.backbone, tuning, classes, tokens,
                                      deep=deep, name=name))
        except ValueError as err:  # the protocol does not fit the backbone
            print(f'{name}: skipped ({err})')
    p = ('per task from ' + ', '.join(args.hparams)
         if args.hparams else f'p={args.num_tokens}')
    print(f'{args.backbone}, {len(tasks)} tasks '
          f'({" + ".join(args.benchmarks)}), VPT {p}\n')
    print(format_table(rows, len(tasks)))


if __name__ == '__main__':
    main()
