"""Self-supervised ViT checkpoints (MAE, MoCo v3) -> mmpretrain ViT keys.

Both releases are timm ``VisionTransformer`` state dicts inside a wrapper,
so they go through :func:`~vpt_mm.converters.convert_timm_vit` once the
wrapper is removed.

- **MAE** (facebookresearch/mae, e.g. ``mae_pretrain_vit_base.pth``,
  weights under ``model``): the pre-training encoder with its final
  ``norm``; decoder keys and ``mask_token``, if present, are dropped. MAE's
  own classification recipes do not read [CLS]: they average the patch
  tokens and normalise them with a new ``fc_norm`` (fine-tuning; linear
  probing uses a BatchNorm), and their fine-tuned checkpoints drop the
  final ``norm``. VPT starts from the pre-training checkpoint and, as for
  the other backbones, reads the final [CLS] token after ``norm``
  (``out_type='cls_token'``); ``out_type='avg_featmap'`` gives MAE's
  average-pool features instead. Fine-tuned checkpoints (``fc_norm``) are
  refused.
- **MoCo v3** (facebookresearch/moco-v3, e.g. ``vit-b-300ep.pth.tar``,
  weights under ``state_dict`` with ``module.base_encoder.`` /
  ``module.momentum_encoder.`` / ``module.predictor.``): the base encoder
  without its projection head. The linear-classification checkpoint of
  the same release (``linear-vit-b-300ep.pth.tar``, keys ``module.<...>``
  with a trained ``head``) is not a pre-training checkpoint and is refused.
"""
from __future__ import annotations

import re
from typing import Dict

import torch

from .timm_vit import convert_timm_vit


def convert_mae_vit(state: Dict[str, torch.Tensor]) -> \
        Dict[str, torch.Tensor]:
    """Convert an MAE pre-training checkpoint's encoder.

    Raises:
        ValueError: For a fine-tuned MAE checkpoint, or unknown keys.
    """
    if any(k.startswith('fc_norm.') for k in state):
        raise ValueError(
            'This is a fine-tuned MAE checkpoint (global pool + fc_norm, no '
            "final norm); convert the pre-training checkpoint (e.g. "
            'mae_pretrain_vit_base.pth) instead')
    encoder = {
        k: v
        for k, v in state.items()
        if not re.match(r'^(decoder_|mask_token$)', k)
    }
    return convert_timm_vit(encoder)


def convert_mocov3_vit(state: Dict[str, torch.Tensor]) -> \
        Dict[str, torch.Tensor]:
    """Convert a MoCo v3 pre-training checkpoint's base encoder.

    Raises:
        ValueError: For the linear-classification checkpoint, or a state
            dict without a base encoder.
    """
    prefix = None
    for candidate in ('module.base_encoder.', 'base_encoder.'):
        if any(k.startswith(candidate) for k in state):
            prefix = candidate
            break
    if prefix is None:
        if any(re.match(r'^(module\.)?blocks\.', k) for k in state):
            raise ValueError(
                'This looks like a MoCo v3 linear-classification checkpoint '
                "(e.g. linear-vit-b-300ep.pth.tar: 'module.<...>' keys with "
                'a trained head and no base_encoder): it is not the '
                'pre-training checkpoint. Convert vit-b-300ep.pth.tar '
                'instead')
        raise ValueError("Not a MoCo v3 checkpoint: no 'base_encoder.' keys")
    encoder = {
        k[len(prefix):]: v
        for k, v in state.items()
        if k.startswith(prefix) and not k[len(prefix):].startswith('head.')
    }
    return convert_timm_vit(encoder)
