"""Classify images with tuned tasks on one frozen backbone.

Each --task is NAME=FILE: a benchmark task name (its class count from the
task table) or any name (the class count from the file's head), and its
tuned-only .safetensors file (or a training .pth of exactly this config);
NAME=FILE1,FILE2,... averages the probabilities of several prompt sets of
one task (a prompt ensemble, e.g. several seeds). The config decides the
backbone; each file decides its prompt length and layers. Tasks of the
prompted backbones (ViT, Swin, ConvNets) share one backbone and one forward
pass per batch.

Example:
    python tools/infer.py configs/vtab/vpt_deep_vit-b.py images/ \
        --task dmlab=dmlab.safetensors --task eurosat=s0.st,s1.st,s2.st \
        --out preds.json
"""
import argparse
import glob
import os.path as osp
import sys

from vpt_mm.apis import VPTInferencer, parse_task_args
from vpt_mm.config import add_config_args, config_from_args
from vpt_mm.devices import add_device_arg
from vpt_mm.fileio import write_json

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def list_images(paths):
    """Image files of the arguments: files as given, folders searched
    recursively (sorted)."""
    images = []
    for path in paths:
        if osp.isdir(path):
            found = sorted(
                p for p in glob.glob(osp.join(path, '**', '*'),
                                     recursive=True)
                if p.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise SystemExit(f'{path} holds no image file')
            images += found
        elif osp.isfile(path):
            images.append(path)
        else:
            raise SystemExit(f'{path} does not exist')
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, task=False)
    parser.add_argument('inputs', nargs='+', help='image files or folders')
    parser.add_argument(
        '--task', action='append', required=True,
        metavar='NAME=FILE[,FILE...]',
        help='a task and its tuned-only file (several files: a prompt '
        'ensemble); repeat for more tasks. A benchmark task name (dmlab, '
        'cub, ...) points the config at that task and the file must have '
        'been trained on it; any other name is a label')
    parser.add_argument('--out', help='write the predictions to this json')
    parser.add_argument('--batch-size', type=int, default=32)
    add_device_arg(parser)
    parser.add_argument('--allow-other-backbone', action='store_true')
    args = parser.parse_args()
    images = list_images(args.inputs)
    tasks = parse_task_args(args.task)
    cfg = config_from_args(args, task=False)  # --task is NAME=FILE here
    inferencer = VPTInferencer(cfg, tasks, args.device,
                               args.allow_other_backbone)
    results = inferencer(images, args.batch_size)
    preds = dict(zip(images, results))
    if args.out:
        write_json(preds, args.out)
    for image, row in preds.items():
        shown = ', '.join(
            f'{t}: {r["pred_class"]} ({max(r["pred_scores"]):.2f})'
            for t, r in row.items())
        print(f'{image}: {shown}')
    if args.out:
        print(f'Wrote {len(preds)} predictions to {args.out}',
              file=sys.stderr)


if __name__ == '__main__':
    main()
