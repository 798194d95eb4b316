"""The five FGVC datasets of the paper, read from json split files.

Each dataset folder holds ``train.json``, ``val.json`` and ``test.json``,
each ``{relative_image_path: class_id}``, with paths relative to the image
folder (``images/`` for CUB and NABirds, ``Images/`` for Stanford Dogs, the
dataset folder itself for Stanford Cars and Oxford Flowers)::

    data/fgvc/
        CUB_200_2011/   train.json val.json test.json images/...
        nabirds/        train.json val.json test.json images/...
        OxfordFlower/   train.json val.json test.json jpg/...
        Stanford-dogs/  train.json val.json test.json Images/...
        Stanford-cars/  train.json val.json test.json cars_train/...

``tools/dataset_converters/prepare_fgvc.py`` writes the json files from
each dataset's official annotation files. Class ids in the files are the
official ones (e.g. 1..200 for CUB, sparse ids for NABirds); they are
remapped to 0..C-1 in sorted order over the union of the three files, so
every split uses the same mapping.
"""
from __future__ import annotations

import json
import os.path as osp
from typing import Dict, List, Tuple

from ..registry import DATASETS
from .benchmarks import BenchmarkDataset

SPLIT_FILES = ('train.json', 'val.json', 'test.json')


def read_split_file(path: str) -> Dict[str, int]:
    """Read one ``{relative_image_path: class_id}`` file, checking types."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'Split file {path} does not exist (write '
                                'it with tools/dataset_converters/'
                                'prepare_fgvc.py)')
    def unique(pairs: list) -> dict:
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise ValueError(f'{path}: entry {key!r} appears twice (a '
                                 'duplicated entry would count twice)')
            seen[key] = value
        return seen

    with open(path) as f:
        try:
            split = json.load(f, object_pairs_hook=unique)
        except json.JSONDecodeError as e:
            raise ValueError(f'{path}: not valid json ({e})') from None
    if not isinstance(split, dict):
        raise ValueError(f'{path}: expected an object '
                         '{relative_image_path: class_id}')
    for key, value in split.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f'{path}, entry {key!r}: class id {value!r} is '
                             'not an integer')
    return split


@DATASETS.register_module()
class FGVC(BenchmarkDataset):
    """One FGVC dataset: CUB-200-2011, NABirds, Oxford Flowers, Stanford
    Dogs or Stanford Cars.

    Args:
        task (str): ``'cub'``, ``'nabirds'``, ``'oxford_flowers'``,
            ``'stanford_dogs'`` or ``'stanford_cars'``.
        data_root (str): Folder holding the dataset folders.
        split (str): ``'train'``, ``'val'``, ``'trainval'`` (train + val,
            for the final runs) or ``'test'``.
        train_fraction (float, optional): Seeded per-class fraction of the
            split to keep. Defaults to None.
        fraction_seed (int): Seed of ``train_fraction``. Defaults to 0.
        pipeline (Sequence): Data pipeline. Defaults to ().
        **kwargs: Other arguments of mmpretrain's ``BaseDataset``.

    Examples:
        >>> ds = FGVC(task='cub', data_root='data/fgvc',
        ...           split='train')  # doctest: +SKIP
        >>> len(ds.CLASSES)  # doctest: +SKIP
        200
    """

    BENCHMARK = 'fgvc'
    SPLITS = ('train', 'val', 'trainval', 'test')
    TUNE_SPLITS = ('train', 'val')
    #: As in the official code, FGVC final runs train on train only.
    FINAL_SPLITS = ('train', 'test')

    def read_split(self) -> List[Tuple[str, int, str]]:
        """Read the split and remap class ids over all three files."""
        if not osp.isdir(self.task_root):
            raise FileNotFoundError(
                f'FGVC dataset folder {self.task_root} does not exist (see '
                'docs/en/user_guides/benchmarks.md for the layout)')
        splits = {
            name: read_split_file(osp.join(self.task_root, name))
            for name in SPLIT_FILES
        }
        class_ids = sorted(set().union(*(s.values()
                                         for s in splits.values())))
        if len(class_ids) != self.task.num_classes:
            raise ValueError(
                f'{self.task_root}: {", ".join(SPLIT_FILES)} hold '
                f'{len(class_ids)} distinct class ids, but '
                f'{self.task.name} has {self.task.num_classes} classes')
        remap = {c: i for i, c in enumerate(class_ids)}
        names = dict(trainval=['train.json', 'val.json']).get(
            self.split, [f'{self.split}.json'])
        img_root = osp.join(self.task_root, self.task.img_prefix)
        samples = []
        for name in names:
            for rel_path, class_id in splits[name].items():
                where = f'{osp.join(self.task_root, name)}, entry {rel_path!r}'
                samples.append(
                    (osp.join(img_root, rel_path), remap[class_id], where))
        if not samples:
            raise ValueError(f'{self.task_root}: split {self.split} lists no '
                             'images')
        return samples
