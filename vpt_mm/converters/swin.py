"""Official Swin Transformer checkpoints -> mmpretrain ``SwinTransformer``.

The official release (microsoft/Swin-Transformer, e.g.
``swin_base_patch4_window7_224_22k.pth``) stores the weights under
``model``, with the patch-merging layer at the end of each stage
(``layers.<i>.downsample``) concatenating the four 2x2 neighbours in the
order (0,0), (1,0), (0,1), (1,1) (row, column). mmcv's ``PatchMerging``
unfolds them channel-major instead, so the reduction weight and its norm are
permuted here.
"""
from __future__ import annotations

import re
from typing import Dict

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


def convert_swin(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename an official Swin state dict to mmpretrain ``SwinTransformer``
    keys (``PromptedSwin`` uses the same).

    Args:
        state (dict): The official state dict (the ``model`` entry of the
            release checkpoint; :func:`load_source_checkpoint` unwraps it).

    Returns:
        dict: Backbone keys; the final ``norm`` becomes ``norm<last stage>``
        and the classifier head is dropped.

    Raises:
        ValueError: On a key this converter does not know, naming it.
    """
    rules = _RULES + (final_norm_rule(state, 'layers',
                                      'patch_embed.proj.weight', 'Swin'), )
    out = rename_keys(state, rules, _DROPPED, 'Swin',
                      hint='this converter reads the official '
                      'microsoft/Swin-Transformer (v1) layout')
    for key in list(out):
        if re.match(r'^stages\.\d+\.downsample\.(reduction\.weight|norm\.)',
                    key):
            out[key] = _unfold_order(out[key])
    return out
