"""Write an FGVC dataset's train.json / val.json / test.json from its
official annotation files (see vpt_mm/datasets/fgvc_splits.py).

Examples:
    python tools/dataset_converters/prepare_fgvc.py cub data/fgvc/CUB_200_2011
    python tools/dataset_converters/prepare_fgvc.py stanford_cars \
        data/fgvc/Stanford-cars --seed 0
"""
import argparse

from vpt_mm.datasets.fgvc_splits import READERS, write_fgvc_splits


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write FGVC json split files from the official '
        'annotations')
    parser.add_argument('dataset', choices=sorted(READERS))
    parser.add_argument('root', help='the dataset folder')
    parser.add_argument(
        '--out-dir', help='where to write the json files (default: root)')
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of the 90/10 train/val '
        'split (default: 0)')
    parser.add_argument(
        '--val-fraction',
        type=float,
        default=0.1,
        help='val fraction where the dataset has no val split (default: '
        '0.1)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    counts = write_fgvc_splits(args.dataset, args.root, args.out_dir,
                               args.seed, args.val_fraction)
    print(', '.join(f'{name}: {num} images' for name, num in counts.items()))


if __name__ == '__main__':
    main()
