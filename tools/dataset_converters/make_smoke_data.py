"""Write tiny random copies of the benchmarks' on-disk layouts for CPU smoke
runs of every config family (docs/en/user_guides/train_test.md, "CPU smoke
tests") and of the own-dataset guide (docs/en/user_guides/own_dataset.md).

Writes, under OUT:
    vtab-1k/dmlab/          a VTAB-1k task (6 classes, 1 image per class and
                            split), the four split lists
    fgvc/Stanford-dogs/     Stanford Dogs in its official layout (120
                            classes, 1 train + 1 test image each) and the
                            json splits prepare_fgvc.py writes
    ade/ADEChallengeData2016/  ADE20K in miniature (4 train, 2 val images)
    imagefolder/            an ImageFolder dataset (3 classes, 4 train and
                            2 val images each), mmpretrain's CustomDataset

With ``--vtab-only TASK``, only that VTAB-1k task, ``--per-class`` images
per class (train800 : val200 : test = 4 : 1 : ``--test-ratio``) of
``--size`` pixels (e.g. the 1000 224x224 training images of
tools/gpu_check.sh's time-to-result run).

Example:
    python tools/dataset_converters/make_smoke_data.py data/smoke
    python tools/dataset_converters/make_smoke_data.py data/ttr \
        --vtab-only eurosat --per-class 100 --size 224
"""
import argparse
import os.path as osp

from vpt_mm.datasets.fgvc_splits import write_fgvc_splits
from vpt_mm.datasets.synthetic import (
    make_ade20k_layout,
    make_dogs_layout,
    make_imagefolder,
    make_vtab_task,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out', help='output folder, e.g. data/smoke')
    parser.add_argument('--vtab-only', metavar='TASK',
                        help='write only this VTAB-1k task')
    parser.add_argument('--per-class', type=int, default=5,
                        help='with --vtab-only: training images (train800 + '
                        'val200) per class, a multiple of 5 (default: 5)')
    parser.add_argument('--test-ratio', type=float, default=0.5,
                        help='with --vtab-only: test images per training '
                        'image (default: 0.5)')
    parser.add_argument('--size', type=int,
                        help='with --vtab-only: square images of this side '
                        '(default: small random sizes)')
    args = parser.parse_args()
    if args.vtab_only:
        if args.per_class < 5 or args.per_class % 5:
            parser.error('--per-class must be a positive multiple of 5')
        size = (args.size, args.size) if args.size else None
        test = max(1, round(args.per_class * args.test_ratio))
        task_dir = make_vtab_task(
            osp.join(args.out, 'vtab-1k'), args.vtab_only,
            train=args.per_class * 4 // 5, val=args.per_class // 5,
            test=test, size=size)
        print(f'VTAB-1k {args.vtab_only}: {task_dir} ({args.per_class} '
              f'training and {test} test images per class)')
        return
    vtab = make_vtab_task(osp.join(args.out, 'vtab-1k'), 'dmlab', train=1,
                          val=1, test=1)
    dogs = make_dogs_layout(osp.join(args.out, 'fgvc'), train=1, test=1)
    counts = write_fgvc_splits('stanford_dogs', dogs)
    ade = make_ade20k_layout(osp.join(args.out, 'ade'))
    folder = make_imagefolder(osp.join(args.out, 'imagefolder'))
    print(f'VTAB-1k dmlab: {vtab}')
    print(f'FGVC Stanford Dogs: {dogs} (' +
          ', '.join(f'{k}: {v} images' for k, v in counts.items()) + ')')
    print(f'ADE20K: {ade}')
    print(f'ImageFolder: {folder} (train/ and val/, 3 classes)')


if __name__ == '__main__':
    main()
