"""scikit-learn's bundled handwritten digits, for the CPU demo.

The UCI "Optical Recognition of Handwritten Digits" test set (1,797 images of
8x8 pixels, 16 grey levels) ships inside scikit-learn, so the demo needs no
download. A class subset and a seeded, stratified train/test split make two
disjoint tasks out of it: pre-training on some digits, transfer to others.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from mmpretrain.datasets import BaseDataset

from ..registry import DATASETS

SPLITS = ('train', 'test')


@DATASETS.register_module()
class SklearnDigits(BaseDataset):
    """A class subset of scikit-learn's 8x8 digits as an mmpretrain dataset.

    Images are (8, 8, 1) uint8 arrays (grey levels scaled to 0..255) under
    ``img``; labels are remapped to 0..len(digits)-1 in the order given.

    Args:
        digits (Sequence[int]): Digits (0-9) forming the classes.
        split (str): ``'train'`` or ``'test'``. Defaults to ``'train'``.
        test_ratio (float): Fraction of each class held out for ``'test'``.
            Defaults to 0.25.
        seed (int): Seed of the split; the same seed gives the same split.
            Defaults to 0.
        pipeline (Sequence[dict]): Data pipeline. Defaults to ().
        **kwargs: Other arguments of mmpretrain's ``BaseDataset``.

    Examples:
        >>> ds = SklearnDigits(digits=[5, 6, 7, 8, 9], split='test')
        >>> ds.CLASSES
        ['5', '6', '7', '8', '9']
    """

    def __init__(self,
                 digits: Sequence[int],
                 split: str = 'train',
                 test_ratio: float = 0.25,
                 seed: int = 0,
                 pipeline: Sequence = (),
                 **kwargs) -> None:
        if split not in SPLITS:
            raise ValueError(f'Unknown split {split!r}; choose from {SPLITS}')
        digits = [int(d) for d in digits]
        if not digits or len(set(digits)) != len(digits) or not all(
                0 <= d <= 9 for d in digits):
            raise ValueError('digits must be distinct integers in 0..9, got '
                             f'{digits}')
        if not 0.0 < test_ratio < 1.0:
            raise ValueError(f'test_ratio must be in (0, 1), got {test_ratio}')
        self.digits = digits
        self.split = split
        self.test_ratio = test_ratio
        self.seed = seed
        super().__init__(
            ann_file='',
            metainfo=dict(classes=[str(d) for d in digits]),
            pipeline=pipeline,
            test_mode=split == 'test',
            **kwargs)

    def _join_prefix(self) -> None:
        """Nothing to join: the data comes from scikit-learn."""

    def load_data_list(self) -> List[dict]:
        """Select the classes and this split's samples."""
        from sklearn.datasets import load_digits
        data = load_digits()
        images = np.clip(data.images * 16, 0, 255).astype(np.uint8)
        rng = np.random.RandomState(self.seed)
        data_list = []
        for label, digit in enumerate(self.digits):
            idx = np.flatnonzero(data.target == digit)
            idx = idx[rng.permutation(len(idx))]
            num_test = int(round(len(idx) * self.test_ratio))
            chosen = idx[:num_test] if self.split == 'test' else idx[num_test:]
            for i in sorted(chosen):
                data_list.append(
                    dict(img=images[i][..., None], gt_label=label))
        return data_list

    def extra_repr(self) -> Optional[List[str]]:
        return [f'Digits: {self.digits}', f'Split: {self.split}']
