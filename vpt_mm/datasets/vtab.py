"""VTAB-1k (Zhai et al., 2019) in its extracted on-disk layout.

One folder per task under the data root, holding the images and four split
lists, one ``relative/path label`` per line::

    data/vtab-1k/
        caltech101/
            train800.txt  val200.txt  train800val200.txt  test.txt
            images/...            (any layout; paths are relative)
        cifar100/
        ...

No TensorFlow is needed. Task folders are named as in :data:`TASKS`
(``cifar100``, ``kitti_dist``); the widely shared extracted archive names
two of them ``cifar`` and ``kitti``: rename or symlink those
(docs/en/user_guides/benchmarks.md).
"""
from __future__ import annotations

import os.path as osp
from typing import List, Tuple

from ..registry import DATASETS
from .benchmarks import BenchmarkDataset


@DATASETS.register_module()
class VTAB1k(BenchmarkDataset):
    """One VTAB-1k task.

    Args:
        task (str): One of the 19 tasks, e.g. ``'dmlab'``.
        data_root (str): Folder holding one folder per task.
        split (str): ``'train800'``, ``'val200'``, ``'train800val200'``
            (all 1000 training images) or ``'test'``.
        train_fraction (float, optional): Seeded per-class fraction of the
            split to keep. Defaults to None.
        fraction_seed (int): Seed of ``train_fraction``. Defaults to 0.
        pipeline (Sequence): Data pipeline. Defaults to ().
        **kwargs: Other arguments of mmpretrain's ``BaseDataset``.

    Examples:
        >>> ds = VTAB1k(task='dmlab', data_root='data/vtab-1k',
        ...             split='train800')  # doctest: +SKIP
        >>> len(ds), len(ds.CLASSES)  # doctest: +SKIP
        (800, 6)
    """

    BENCHMARK = 'vtab1k'
    SPLITS = ('train800', 'val200', 'train800val200', 'test')
    TUNE_SPLITS = ('train800', 'val200')
    FINAL_SPLITS = ('train800val200', 'test')

    def read_split(self) -> List[Tuple[str, int, str]]:
        """Parse ``<split>.txt``: one ``relative/path label`` per line."""
        if not osp.isdir(self.task_root):
            raise FileNotFoundError(
                f'VTAB-1k task folder {self.task_root} does not exist (see '
                'docs/en/user_guides/benchmarks.md for the layout; the shared '
                'archive names '
                "cifar100 'cifar' and kitti_dist 'kitti')")
        list_file = osp.join(self.task_root, f'{self.split}.txt')
        if not osp.isfile(list_file):
            raise FileNotFoundError(
                f'Split file {list_file} of VTAB-1k task {self.task.name} '
                'does not exist')
        samples = []
        with open(list_file) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f'{list_file}, line {line_no}'
                parts = line.rsplit(maxsplit=1)
                if len(parts) != 2:
                    raise ValueError(f'{where}: expected "relative/path '
                                     f'label", got {line.strip()!r}')
                try:
                    label = int(parts[1])
                except ValueError:
                    raise ValueError(f'{where}: label {parts[1]!r} is not '
                                     'an integer') from None
                samples.append(
                    (osp.join(self.task_root, parts[0]), label, where))
        if not samples:
            raise ValueError(f'Split file {list_file} lists no images')
        return samples
