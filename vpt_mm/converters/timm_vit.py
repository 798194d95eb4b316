"""timm ``VisionTransformer`` state dict -> mmpretrain ViT backbone keys."""
from __future__ import annotations

from typing import Dict

import torch

from .common import rename_keys

# (timm pattern, mmpretrain replacement); the first match wins.
_RULES = (
    (r'^cls_token$', 'cls_token'),
    (r'^pos_embed$', 'pos_embed'),
    (r'^patch_embed\.proj\.', 'patch_embed.projection.'),
    (r'^norm_pre\.', 'pre_norm.'),
    (r'^blocks\.(\d+)\.norm1\.', r'layers.\1.ln1.'),
    (r'^blocks\.(\d+)\.norm2\.', r'layers.\1.ln2.'),
    (r'^blocks\.(\d+)\.attn\.(qkv|proj)\.', r'layers.\1.attn.\2.'),
    (r'^blocks\.(\d+)\.ls1\.gamma$', r'layers.\1.attn.gamma1.weight'),
    (r'^blocks\.(\d+)\.ls2\.gamma$', r'layers.\1.ffn.gamma2.weight'),
    (r'^blocks\.(\d+)\.mlp\.fc1\.', r'layers.\1.ffn.layers.0.0.'),
    (r'^blocks\.(\d+)\.mlp\.fc2\.', r'layers.\1.ffn.layers.1.'),
    (r'^norm\.', 'ln1.'),
)
# Classifier heads are task-specific and not part of the backbone.
_DROPPED = (r'^head\.', r'^head_dist\.', r'^pre_logits\.')


def convert_timm_vit(state: Dict[str, torch.Tensor]) -> \
        Dict[str, torch.Tensor]:
    """Rename a timm ViT state dict to mmpretrain ``VisionTransformer`` keys.

    Args:
        state (dict): A timm ``VisionTransformer`` state dict (class token,
            pre-norm blocks, final ``norm``).

    Returns:
        dict: Backbone keys for mmpretrain's ``VisionTransformer`` and
        vpt_mm's ``PromptedViT``; the classifier head is dropped.

    Raises:
        ValueError: On a key this converter does not know (e.g. timm's
            ``fc_norm`` of global-pool models, or register tokens), naming it.
    """
    out = rename_keys(
        state, _RULES, _DROPPED, 'timm ViT',
        hint='this converter supports class-token ViTs with a final '
        "'norm' (no fc_norm, register tokens or qk-norm)")
    if 'pos_embed' not in out:
        raise ValueError('Not a timm ViT state dict: no pos_embed')
    return out
