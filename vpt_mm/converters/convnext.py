"""Official ConvNeXt checkpoints -> mmpretrain ``ConvNeXt`` keys.

The official release (facebookresearch/ConvNeXt, e.g.
``convnext_base_22k_224.pth``) stores the weights under ``model``; its
blocks name their layers ``dwconv``, ``norm``, ``pwconv1``, ``pwconv2`` and
``gamma``, and its final ``norm`` follows the global pooling, as
mmpretrain's ``norm3`` does with ``gap_before_final_norm=True``.
"""
from __future__ import annotations

from typing import Dict

import torch

from .common import final_norm_rule, rename_keys

_BLOCK = r'^stages\.(\d+)\.(\d+)\.'
_RULES = (
    (r'^downsample_layers\.', 'downsample_layers.'),
    (_BLOCK + r'dwconv\.', r'stages.\1.\2.depthwise_conv.'),
    (_BLOCK + r'norm\.', r'stages.\1.\2.norm.'),
    (_BLOCK + r'pwconv1\.', r'stages.\1.\2.pointwise_conv1.'),
    (_BLOCK + r'pwconv2\.', r'stages.\1.\2.pointwise_conv2.'),
    (_BLOCK + r'gamma$', r'stages.\1.\2.gamma'),
)
_DROPPED = (r'^head\.', )


def convert_convnext(state: Dict[str, torch.Tensor]) -> \
        Dict[str, torch.Tensor]:
    """Rename an official ConvNeXt state dict to mmpretrain ``ConvNeXt``
    keys (``PromptedConvNeXt`` uses the same).

    Args:
        state (dict): The official state dict.

    Returns:
        dict: Backbone keys; the final ``norm`` becomes ``norm<last stage>``
        and the classifier head is dropped.

    Raises:
        ValueError: On a key this converter does not know, naming it.
    """
    rules = _RULES + (final_norm_rule(state, 'stages',
                                      'downsample_layers.0.0.weight',
                                      'ConvNeXt'), )
    return rename_keys(state, rules, _DROPPED, 'ConvNeXt',
                       hint='this converter reads the official '
                       'facebookresearch/ConvNeXt layout')
