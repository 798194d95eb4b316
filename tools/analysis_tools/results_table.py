"""Merge the results of several sweeps into one table (one row per
method/backbone), written as markdown, csv and json.

Examples:
    python tools/analysis_tools/results_table.py \
        work_dirs/sweep/vpt_deep_vit-b work_dirs/sweep/vpt_shallow_vit-b \
        --out work_dirs/table1 --reference VPT-Deep
"""
import argparse
import json
import os.path as osp

from vpt_mm.evaluation import write_results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Merge sweep results')
    parser.add_argument(
        'sweeps', nargs='+', help='sweep folders (holding records.json) or '
        'records json files')
    parser.add_argument(
        '--out', required=True, help='output path without extension')
    parser.add_argument(
        '--reference', help='METHOD or METHOD:BACKBONE: add one-sided '
        'significance tests of it against every other row (Wilcoxon '
        'signed-rank over the tasks, Welch\'s t-test per task over seeds)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    records = []
    for path in args.sweeps:
        if osp.isdir(path):
            path = osp.join(path, 'records.json')
        if not osp.isfile(path):
            raise FileNotFoundError(f'{path} does not exist (has the sweep '
                                    'finished?)')
        with open(path) as f:
            records += json.load(f)
    write_results(records, args.out, args.reference)
    with open(f'{args.out}.md') as f:
        print(f.read())


if __name__ == '__main__':
    main()
