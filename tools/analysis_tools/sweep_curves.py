"""Draw the paper's curves from sweep folders: accuracy vs training-data
fraction (Fig. 3), vs prompt length (Fig. 6) and vs prompt depth (Fig. 7).

Give the figure and the sweeps made for it: ``fraction``, sweeps at
several ``--train-fraction`` values (Fig. 3, one PNG per task); ``length``,
sweeps with a ``--num-tokens`` grid (Fig. 6, one PNG per method); ``depth``,
sweeps of one config with other ``prompt_cfg.layers`` (Fig. 7, one PNG per
config). Two sweeps giving the same point are an error.

Example:
    python tools/analysis_tools/sweep_curves.py fraction \
        work_dirs/sweep/fgvc-* --out-dir work_dirs/curves
"""
import argparse
import os.path as osp

from vpt_mm.evaluation.curves import (
    depth_curves,
    fraction_curves,
    load_sweep,
    prompt_length_curves,
)
from vpt_mm.evaluation.figures import plot_curves

#: What each figure needs.
NEEDS = dict(
    fraction='sweeps at two or more --train-fraction values',
    length='a sweep grid of two or more --num-tokens',
    depth='sweeps of one config at two or more prompt depths')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('figure', choices=('fraction', 'length', 'depth'))
    parser.add_argument('sweeps', nargs='+', help='sweep folders')
    parser.add_argument('--out-dir', required=True)
    args = parser.parse_args()
    sweeps = [load_sweep(p) for p in args.sweeps]
    written = []

    def draw(name, curves, title, xlabel, ylabel, log_x=False):
        out = osp.join(args.out_dir, f'{name}.png')
        drawn = plot_curves(curves, title, xlabel, ylabel, out, log_x)
        written.append(f'{out}: {drawn["curves"]} curves, '
                       f'{drawn["points"]} points')

    if args.figure == 'fraction':
        for task, curves in sorted(fraction_curves(sweeps).items()):
            if any(len(xy) >= 2 for xy in curves.values()):
                draw(f'fraction_{task}', curves,
                     f'{task}: test top-1 vs training data (Fig. 3)',
                     'fraction of the training split', 'test top-1 (%)',
                     log_x=True)
    elif args.figure == 'length':
        for method, curves in sorted(prompt_length_curves(sweeps).items()):
            draw(f'prompt_length_{method}', curves,
                 f'{method}: best val top-1 per prompt length (Fig. 6)',
                 'prompt length p', 'val top-1 (%), best lr / wd')
    else:
        for config, curves in sorted(depth_curves(sweeps).items()):
            draw(f'depth_{config}', curves,
                 f'{config}: val top-1 vs prompt depth (Fig. 7)',
                 'prompted layers', 'val top-1 (%), chosen lr / wd')
    if not written:
        raise SystemExit(
            f'No {args.figure} curve can be drawn from these sweeps: '
            + NEEDS[args.figure])
    print('\n'.join(written))


if __name__ == '__main__':
    main()
