"""The paper's classification benchmarks in one table: VTAB-1k's 19 tasks
and the 5 FGVC datasets, with their class counts, groups and folders.

Everything that depends on "which task" reads this table: the datasets
(:class:`~vpt_mm.datasets.VTAB1k`, :class:`~vpt_mm.datasets.FGVC`), task
selection in configs (:func:`apply_task`), the sweep and the results tables.
"""
from __future__ import annotations

import os.path as osp
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmpretrain.datasets import BaseDataset

from ..validation import require_int, require_number, require_str


@dataclass(frozen=True)
class TaskInfo:
    """One classification task.

    Attributes:
        name (str): Task name, as used by ``--task`` and in the tables.
        benchmark (str): ``'vtab1k'`` or ``'fgvc'``.
        dataset_type (str): Registered dataset class reading it.
        num_classes (int): Number of classes.
        group (str): VTAB group (Natural / Specialized / Structured) or
            ``'FGVC'``.
        folder (str): Folder of the task under the benchmark's data root.
        img_prefix (str): Folder of the images inside ``folder``.
        title (str): Column title in the results tables.
    """
    name: str
    benchmark: str
    dataset_type: str
    num_classes: int
    group: str
    folder: str
    img_prefix: str
    title: str


def _vtab(name: str, num_classes: int, group: str, title: str) -> TaskInfo:
    return TaskInfo(name, 'vtab1k', 'VTAB1k', num_classes, group, name, '',
                    title)


def _fgvc(name: str, num_classes: int, folder: str, img_prefix: str,
          title: str) -> TaskInfo:
    return TaskInfo(name, 'fgvc', 'FGVC', num_classes, 'FGVC', folder,
                    img_prefix, title)


#: Every task, in the column order of the paper's Table 1.
TASKS: Dict[str, TaskInfo] = {
    t.name: t
    for t in [
        _vtab('cifar100', 100, 'Natural', 'CIFAR-100'),
        _vtab('caltech101', 102, 'Natural', 'Caltech101'),
        _vtab('dtd', 47, 'Natural', 'DTD'),
        _vtab('oxford_flowers102', 102, 'Natural', 'Flowers102'),
        _vtab('oxford_iiit_pet', 37, 'Natural', 'Pets'),
        _vtab('svhn', 10, 'Natural', 'SVHN'),
        _vtab('sun397', 397, 'Natural', 'Sun397'),
        _vtab('patch_camelyon', 2, 'Specialized', 'Camelyon'),
        _vtab('eurosat', 10, 'Specialized', 'EuroSAT'),
        _vtab('resisc45', 45, 'Specialized', 'Resisc45'),
        _vtab('diabetic_retinopathy', 5, 'Specialized', 'Retinopathy'),
        _vtab('clevr_count', 8, 'Structured', 'Clevr-Count'),
        _vtab('clevr_dist', 6, 'Structured', 'Clevr-Dist'),
        _vtab('dmlab', 6, 'Structured', 'DMLab'),
        _vtab('kitti_dist', 4, 'Structured', 'KITTI-Dist'),
        _vtab('dsprites_loc', 16, 'Structured', 'dSpr-Loc'),
        _vtab('dsprites_ori', 16, 'Structured', 'dSpr-Ori'),
        _vtab('smallnorb_azi', 18, 'Structured', 'sNORB-Azim'),
        _vtab('smallnorb_ele', 9, 'Structured', 'sNORB-Elev'),
        _fgvc('cub', 200, 'CUB_200_2011', 'images', 'CUB-200-2011'),
        _fgvc('nabirds', 555, 'nabirds', 'images', 'NABirds'),
        _fgvc('oxford_flowers', 102, 'OxfordFlower', '', 'Oxford Flowers'),
        _fgvc('stanford_dogs', 120, 'Stanford-dogs', 'Images',
              'Stanford Dogs'),
        _fgvc('stanford_cars', 196, 'Stanford-cars', '', 'Stanford Cars'),
    ]
}

#: Groups of each benchmark, in table order.
GROUPS: Dict[str, Tuple[str, ...]] = {
    'vtab1k': ('Natural', 'Specialized', 'Structured'),
    'fgvc': ('FGVC', ),
}


def get_task(name: str) -> TaskInfo:
    """Look a task up by name, with an error listing the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        vtab = [t for t in TASKS if TASKS[t].benchmark == 'vtab1k']
        fgvc = [t for t in TASKS if TASKS[t].benchmark == 'fgvc']
        raise ValueError(f'Unknown task {name!r}. VTAB-1k tasks: '
                         f'{", ".join(vtab)}; FGVC datasets: '
                         f'{", ".join(fgvc)}') from None


def tasks_of(benchmark: str) -> List[str]:
    """Names of a benchmark's tasks, in table order."""
    if benchmark not in GROUPS:
        raise ValueError(f'Unknown benchmark {benchmark!r}; choose from '
                         f'{sorted(GROUPS)}')
    return [n for n, t in TASKS.items() if t.benchmark == benchmark]


def stratified_subset(labels: Sequence[int], fraction: float,
                      seed: int) -> List[int]:
    """Indices of a seeded, per-class subset of ``fraction`` of the samples.

    Each class keeps ``round(fraction * n_c)`` of its ``n_c`` samples, at
    least one, so every class stays present (the paper's data-size study,
    Fig. 3). The same seed gives the same subset.

    Args:
        labels (Sequence[int]): Label of each sample.
        fraction (float): Fraction to keep, in (0, 1].
        seed (int): Seed of the draw.

    Returns:
        list[int]: Sorted indices of the kept samples.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f'train_fraction must be in (0, 1], got {fraction}')
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    keep = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        num = max(1, int(round(fraction * len(idx))))
        keep.extend(rng.permutation(idx)[:num].tolist())
    return sorted(keep)


class BenchmarkDataset(BaseDataset, metaclass=ABCMeta):
    """Shared part of the VTAB-1k and FGVC datasets.

    A subclass names its benchmark and splits and implements
    :meth:`read_split`, returning ``(image path, label, where)`` triples
    where ``where`` names the file and line (or key) for error messages.
    This class checks the task, the labels and that every image exists,
    and draws the ``train_fraction`` subset.

    Args:
        task (str): Task name (see :data:`TASKS`).
        data_root (str): Root folder of the benchmark, holding one folder
            per task.
        split (str): Split to read; see the subclass.
        train_fraction (float, optional): Keep this seeded, per-class
            fraction of the split (the data-size study). Defaults to None
            (everything).
        fraction_seed (int): Seed of ``train_fraction``. Defaults to 0.
        pipeline (Sequence): Data pipeline. Defaults to ().
        **kwargs: Other arguments of mmpretrain's ``BaseDataset``.
    """

    BENCHMARK: str = ''
    SPLITS: Tuple[str, ...] = ()
    #: Splits used by the sweep, (train, score), to choose hyper-parameters;
    #: FINAL_SPLITS is (train, score) of the final runs.
    TUNE_SPLITS: Tuple[str, str] = ('', '')
    FINAL_SPLITS: Tuple[str, str] = ('', '')

    def __init__(self,
                 task: str,
                 data_root: str,
                 split: str,
                 train_fraction: Optional[float] = None,
                 fraction_seed: int = 0,
                 pipeline: Sequence = (),
                 **kwargs) -> None:
        require_str('task', task)
        require_str('data_root', data_root)
        require_str('split', split)
        train_fraction = require_number('train_fraction', train_fraction,
                                        optional=True)
        require_int('fraction_seed', fraction_seed)
        info = get_task(task)
        if info.benchmark != self.BENCHMARK:
            raise ValueError(
                f'Task {task!r} belongs to {info.benchmark}, not to '
                f'{type(self).__name__}; use the {info.benchmark} configs '
                f'(dataset type {info.dataset_type!r})')
        if split not in self.SPLITS:
            raise ValueError(f'Unknown split {split!r} of {task}; choose '
                             f'from {self.SPLITS}')
        if train_fraction is not None and not 0.0 < train_fraction <= 1.0:
            raise ValueError(
                f'train_fraction must be in (0, 1], got {train_fraction}')
        self.task = info
        self.split = split
        self.train_fraction = train_fraction
        self.fraction_seed = fraction_seed
        self.task_root = f'{data_root.rstrip("/")}/{info.folder}'
        super().__init__(
            ann_file='',
            metainfo=dict(classes=self.class_names()),
            data_root=self.task_root,
            pipeline=pipeline,
            test_mode=split == self.SPLITS[-1],
            **kwargs)

    def class_names(self) -> List[str]:
        """Class names; the class index as a string by default."""
        return [str(i) for i in range(self.task.num_classes)]

    def prepare_data(self, idx: int) -> dict:
        """mmengine's, with any error while an image is read or transformed
        re-raised naming the image (a 0-byte file otherwise fails inside
        cv2 without a path)."""
        try:
            return super().prepare_data(idx)
        except Exception as err:
            path = self.get_data_info(idx).get('img_path')
            raise RuntimeError(
                f'{type(self).__name__} {self.task.name}/{self.split}: image '
                f'{path} (sample {idx}) could not be read or transformed: '
                f'{type(err).__name__}: {err}') from err

    def _join_prefix(self) -> None:
        """Paths are built by :meth:`read_split`."""

    @abstractmethod
    def read_split(self) -> List[Tuple[str, int, str]]:
        """Read this split: ``(image path, label, where)`` per sample."""

    def load_data_list(self) -> List[dict]:
        """Read, check and subsample the split."""
        samples = self.read_split()
        num_classes = self.task.num_classes
        missing = []
        seen: Dict[str, str] = {}
        for path, label, where in samples:
            if not 0 <= label < num_classes:
                raise ValueError(
                    f'{where}: label {label} is outside the {num_classes} '
                    f'classes of {self.task.name} (0..{num_classes - 1})')
            # The file itself, however it is spelled ('./', '//', links).
            key = osp.realpath(path)
            if key in seen:
                raise ValueError(
                    f'{where}: image {path} is listed twice (also at '
                    f'{seen[key]}, the same file {key}); a duplicated entry '
                    'would count twice in training or in the score')
            seen[key] = where
            if not osp.isfile(path):
                missing.append((where, path))
        if missing:
            where, path = missing[0]
            raise FileNotFoundError(
                f'{where}: image {path} does not exist ({len(missing)} of '
                f'{len(samples)} listed images are missing)')
        if self.train_fraction is not None:
            keep = stratified_subset([s[1] for s in samples],
                                     self.train_fraction, self.fraction_seed)
            samples = [samples[i] for i in keep]
        return [dict(img_path=p, gt_label=label) for p, label, _ in samples]

    def extra_repr(self) -> List[str]:
        body = [f'Task: {self.task.name}', f'Split: {self.split}',
                f'Root: {self.task_root}']
        if self.train_fraction is not None:
            body.append(f'Train fraction: {self.train_fraction} '
                        f'(seed {self.fraction_seed})')
        return body
