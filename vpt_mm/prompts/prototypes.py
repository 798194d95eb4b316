"""Class-prototype prompt initialisation (``init='cls'``, paper appendix).

The prototypes are the mean final [CLS] embedding of the training images of
each class, computed with the frozen backbone *without* prompts.
"""
from __future__ import annotations

from typing import Callable, Iterable, Tuple

import torch


def class_prototypes(features: torch.Tensor, labels: torch.Tensor,
                     num_classes: int) -> torch.Tensor:
    """Mean feature of each class.

    Args:
        features (torch.Tensor): (N, d) embeddings.
        labels (torch.Tensor): (N, ) integer labels in 0..num_classes-1.
        num_classes (int): Number of classes C.

    Returns:
        torch.Tensor: (C, d) class means, usable as ``prompt_cfg.cls_init``.

    Raises:
        ValueError: If a label is out of range or a class has no sample.
    """
    labels = labels.long().flatten()
    if labels.numel() != features.shape[0]:
        raise ValueError(f'{features.shape[0]} features but '
                         f'{labels.numel()} labels')
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f'labels must be in 0..{num_classes - 1}, got '
                         f'{labels.min().item()}..{labels.max().item()}')
    counts = torch.bincount(labels, minlength=num_classes)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f'classes {empty[:10]} have no sample: cannot '
                         'compute their prototypes')
    sums = torch.zeros(num_classes, features.shape[1], dtype=torch.float64)
    sums.index_add_(0, labels, features.double())
    return (sums / counts[:, None]).float()


@torch.no_grad()
def collect_features(
    embed: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run ``embed`` over (images, labels) batches; concatenate the results.
    """
    feats, labels = [], []
    for images, targets in batches:
        feats.append(embed(images).float().cpu())
        labels.append(torch.as_tensor(targets).flatten().cpu())
    if not feats:
        raise ValueError('No batch to compute features from')
    return torch.cat(feats), torch.cat(labels)
