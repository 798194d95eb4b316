"""Official and timm Swin Transformer checkpoints -> mmpretrain
``SwinTransformer``.

The official release (microsoft/Swin-Transformer, e.g.
``swin_base_patch4_window7_224_22k.pth``) stores the weights under
``model``, with the patch-merging layer at the end of each stage
(``layers.<i>.downsample``) concatenating the four 2x2 neighbours in the
order (0,0), (1,0), (0,1), (1,1) (row, column). mmcv's ``PatchMerging``
unfolds them channel-major instead, so the reduction weight and its norm are
permuted here.

timm (>= 0.9, e.g. ``swin_base_patch4_window7_224.ms_in22k``) keeps the
official names and neighbour order, but opens each stage with the previous
stage's patch merging (``layers.<i>.downsample`` for i >= 1), names the
classifier ``head.fc`` and does not save ``relative_position_index``; such a
state dict is recognised by where its patch mergings are and rewritten to
the official layout first (:func:`timm_swin_to_official`).
"""
from __future__ import annotations

import math
import re
from typing import Dict, Tuple

import torch

from .common import final_norm_rule, rename_keys

_BLOCK = r'^layers\.(\d+)\.blocks\.(\d+)\.'
_RULES = (
    (r'^patch_embed\.proj\.', 'patch_embed.projection.'),
    (r'^patch_embed\.norm\.', 'patch_embed.norm.'),
    (r'^absolute_pos_embed$', 'absolute_pos_embed'),
    (_BLOCK + r'(norm1|norm2)\.', r'stages.\1.blocks.\2.\3.'),
    (_BLOCK + r'attn\.(relative_position_bias_table|relative_position_index)$',
     r'stages.\1.blocks.\2.attn.w_msa.\3'),
    (_BLOCK + r'attn\.(qkv|proj)\.', r'stages.\1.blocks.\2.attn.w_msa.\3.'),
    (_BLOCK + r'mlp\.fc1\.', r'stages.\1.blocks.\2.ffn.layers.0.0.'),
    (_BLOCK + r'mlp\.fc2\.', r'stages.\1.blocks.\2.ffn.layers.1.'),
    (r'^layers\.(\d+)\.downsample\.(reduction|norm)\.',
     r'stages.\1.downsample.\2.'),
)
# The classifier is task-specific; shift masks are rebuilt by the model.
_DROPPED = (r'^head\.', r'.*\.attn_mask$')


def _unfold_order(tensor: torch.Tensor) -> torch.Tensor:
    """Permute the last dim from the official (kw, kh, C) neighbour order to
    mmcv's unfold order (C, kh, kw)."""
    *lead, four_c = tensor.shape
    c = four_c // 4
    return tensor.reshape(*lead, 2, 2, c).movedim(-1, -3).transpose(
        -1, -2).reshape(*lead, four_c)


def _merging_stages(state: Dict[str, torch.Tensor]) -> Tuple[set, int]:
    """The stages holding a patch merging, and the number of stages."""
    stages, merges = set(), set()
    for key in state:
        m = re.match(r'^layers\.(\d+)\.(downsample\.)?', key)
        if m:
            stages.add(int(m.group(1)))
            if m.group(2):
                merges.add(int(m.group(1)))
    return merges, len(stages)


def official_relative_position_index(window: int) -> torch.Tensor:
    """The ``relative_position_index`` buffer of a ``window`` x ``window``
    attention window, as the official Swin code builds it."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window), torch.arange(window),
                       indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel = rel + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def timm_swin_to_official(
        state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rewrite a timm (>= 0.9) Swin state dict in the official layout: each
    patch merging moves back to the end of the stage before it, and the
    relative-position index is rebuilt from the bias table's size."""
    out = {}
    for key, value in state.items():
        m = re.match(r'^layers\.(\d+)\.downsample\.(.*)$', key)
        if m:
            key = f'layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}'
        out[key] = value
        if key.endswith('attn.relative_position_bias_table'):
            window = (math.isqrt(value.shape[0]) + 1) // 2
            index = key[:-len('bias_table')] + 'index'
            if index not in state:
                out[index] = official_relative_position_index(window)
    return out


def convert_swin(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename an official Swin state dict to mmpretrain ``SwinTransformer``
    keys (``PromptedSwin`` uses the same).

    Args:
        state (dict): The official state dict (the ``model`` entry of the
            release checkpoint; :func:`load_source_checkpoint` unwraps it),
            or timm's.

    Returns:
        dict: Backbone keys; the final ``norm`` becomes ``norm<last stage>``
        and the classifier head is dropped.

    Raises:
        ValueError: On a key this converter does not know, naming it, or
            patch mergings where neither layout has them.
    """
    merges, num_stages = _merging_stages(state)
    official = set(range(num_stages - 1))
    if merges == set(range(1, num_stages)) and merges != official:
        state = timm_swin_to_official(state)
    elif merges != official:
        raise ValueError(
            f'Swin state dict with patch mergings in stages {sorted(merges)} '
            f'of {num_stages}: neither the official layout (stages '
            f'{sorted(official)}, at the end of each stage) nor timm\'s '
            f'(stages {list(range(1, num_stages))}, opening each stage)')
    rules = _RULES + (final_norm_rule(state, 'layers',
                                      'patch_embed.proj.weight', 'Swin'), )
    out = rename_keys(state, rules, _DROPPED, 'Swin',
                      hint='this converter reads the official '
                      'microsoft/Swin-Transformer (v1) and timm layouts')
    for key in list(out):
        if re.match(r'^stages\.\d+\.downsample\.(reduction\.weight|norm\.)',
                    key):
            out[key] = _unfold_order(out[key])
    return out
