"""A dataset wrapper that runs a deterministic pipeline once per sample and
keeps the results in memory.

VTAB-1k tasks are small (1000 training images) and trained for 100 epochs
with a pipeline without augmentation (decode, resize, pack): decoding the
same JPEGs 100 times is most of the data work, and on a GPU it can bound
the step. Wrapped in :class:`InMemoryDataset`, each sample is loaded and
transformed once, in threads, when the dataset is built; the dataloader's
workers (forked after that) share the decoded tensors.

Example:
    >>> train_pipeline = [dict(type='LoadImageFromFile'),
    ...                   dict(type='Resize', scale=(224, 224)),
    ...                   dict(type='PackInputs')]
    >>> train_dataloader = dict(
    ...     dataset=dict(type='InMemoryDataset',
    ...                  dataset=dict(type='VTAB1k', task='dmlab',
    ...                               split='train800val200',
    ...                               pipeline=train_pipeline)))
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, List, Optional, Sequence, Union

from ..registry import DATASETS

__all__ = ['InMemoryDataset', 'random_transform_names']

#: Transforms that make a pipeline random, besides any whose name contains
#: "Rand" (RandomCrop, RandomFlip, RandAugment, ...).
RANDOM_TRANSFORMS = ('AutoAugment', 'ColorJitter', 'Albu', 'Albumentations',
                     'GaussianBlur', 'Lighting')


def random_transform_names(pipeline: Sequence[Any]) -> List[str]:
    """The random transforms of a pipeline (configs or built transforms),
    by type name."""
    names = [
        str(t.get('type')) if isinstance(t, dict) else type(t).__name__
        for t in pipeline
    ]
    return [n for n in names if 'Rand' in n or n in RANDOM_TRANSFORMS]


@DATASETS.register_module()
class InMemoryDataset:
    """Load and transform every sample of ``dataset`` once; serve copies.

    Only for pipelines without random transforms (refused by name): a
    cached random augmentation would be the same every epoch. Each sample
    served is the cached one with its data sample cloned, so what a model
    writes into it (predictions) never reaches the cache.

    Args:
        dataset (dict | Dataset): The dataset (config) to wrap.
        num_threads (int, optional): Threads that load the samples
            (decoding releases the GIL). Defaults to 8.
        lazy_init (bool): Load only at :meth:`full_init`, as mmengine's
            datasets. Defaults to False.
    """

    def __init__(self,
                 dataset: Union[dict, Any],
                 num_threads: Optional[int] = None,
                 lazy_init: bool = False) -> None:
        self.dataset = (DATASETS.build(dataset)
                        if isinstance(dataset, dict) else dataset)
        pipeline = getattr(self.dataset, 'pipeline', None)
        transforms = getattr(pipeline, 'transforms', pipeline) or []
        random = random_transform_names(transforms)
        if random:
            raise ValueError(
                f'InMemoryDataset keeps each transformed sample, so its '
                f'pipeline must not be random; this one has {random}')
        if num_threads is not None and num_threads < 1:
            raise ValueError(f'num_threads must be >= 1, got {num_threads}')
        self.num_threads = num_threads or 8
        self._samples: Optional[list] = None
        if not lazy_init:
            self.full_init()

    @property
    def metainfo(self) -> dict:
        return self.dataset.metainfo

    def full_init(self) -> None:
        """Load and transform every sample (once)."""
        if self._samples is not None:
            return
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()
        with ThreadPoolExecutor(self.num_threads) as pool:
            self._samples = list(
                pool.map(self.dataset.__getitem__, range(len(self.dataset))))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict:
        self.full_init()
        sample = self._samples[idx]
        out = dict(sample)
        if hasattr(out.get('data_samples'), 'clone'):
            out['data_samples'] = out['data_samples'].clone()
        return out

    def __repr__(self) -> str:
        state = ('not loaded' if self._samples is None else
                 f'{len(self._samples)} samples in memory')
        return f'InMemoryDataset({state}) of\n{self.dataset!r}'
