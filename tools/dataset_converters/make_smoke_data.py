"""Write tiny random copies of the benchmarks' on-disk layouts for CPU smoke
runs of every config family (see the README's "CPU smoke tests").

Writes, under OUT:
    vtab-1k/dmlab/          a VTAB-1k task (6 classes, 1 image per class and
                            split), the four split lists
    fgvc/Stanford-dogs/     Stanford Dogs in its official layout (120
                            classes, 1 train + 1 test image each) and the
                            json splits prepare_fgvc.py writes
    ade/ADEChallengeData2016/  ADE20K in miniature (4 train, 2 val images)

Example:
    python tools/dataset_converters/make_smoke_data.py data/smoke
"""
import argparse
import os.path as osp

from vpt_mm.datasets.fgvc_splits import write_fgvc_splits
from vpt_mm.datasets.synthetic import (
    make_ade20k_layout,
    make_dogs_layout,
    make_vtab_task,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out', help='output folder, e.g. data/smoke')
    args = parser.parse_args()
    vtab = make_vtab_task(osp.join(args.out, 'vtab-1k'), 'dmlab', train=1,
                          val=1, test=1)
    dogs = make_dogs_layout(osp.join(args.out, 'fgvc'), train=1, test=1)
    counts = write_fgvc_splits('stanford_dogs', dogs)
    ade = make_ade20k_layout(osp.join(args.out, 'ade'))
    print(f'VTAB-1k dmlab: {vtab}')
    print(f'FGVC Stanford Dogs: {dogs} (' +
          ', '.join(f'{k}: {v} images' for k, v in counts.items()) + ')')
    print(f'ADE20K: {ade}')


if __name__ == '__main__':
    main()
