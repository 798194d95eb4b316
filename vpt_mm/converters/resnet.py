"""torchvision ResNet checkpoints -> mmpretrain ``ResNet`` keys.

mmpretrain's ResNet (``style='pytorch'``) names its layers as torchvision
does (``conv1``, ``bn1``, ``layer<i>.<j>.conv<k>``, ``downsample``), so the
conversion drops the classifier ``fc`` and checks every other key.
"""
from __future__ import annotations

from typing import Dict

import torch

from .common import rename_keys

_RULES = (
    (r'^(conv1|bn1)\.', r'\1.'),
    (r'^(layer[1-4]\.\d+\.(conv|bn)[1-3])\.', r'\1.'),
    (r'^(layer[1-4]\.\d+\.downsample\.[01])\.', r'\1.'),
)
_DROPPED = (r'^fc\.', )


def convert_torchvision_resnet(state: Dict[str, torch.Tensor]) -> \
        Dict[str, torch.Tensor]:
    """Check a torchvision ResNet state dict and drop its classifier.

    Args:
        state (dict): A torchvision ``resnet18/34/50/101/152`` state dict
            (e.g. ``resnet50-0676ba61.pth``).

    Returns:
        dict: mmpretrain ``ResNet`` backbone keys.

    Raises:
        ValueError: On a key this converter does not know, naming it.
    """
    if 'conv1.weight' not in state:
        raise ValueError("Not a torchvision ResNet state dict: no "
                         "'conv1.weight'")
    return rename_keys(state, _RULES, _DROPPED, 'torchvision ResNet',
                       hint='this converter reads torchvision ResNets '
                       '(not ResNeXt/wide variants with other layouts)')
