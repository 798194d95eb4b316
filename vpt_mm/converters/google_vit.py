"""Google's ViT ``.npz`` checkpoints -> mmpretrain ``VisionTransformer``.

The layout of google-research/vision_transformer (e.g.
``imagenet21k_ViT-B_16.npz``, ``imagenet21k_ViT-L_16.npz``,
``imagenet21k_ViT-H_14.npz``): Flax names such as
``Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel``,
kernels stored input-major, attention kernels split per head. The
ImageNet-21k checkpoints also hold a ``pre_logits`` representation layer
and a ``head``; both belong to the pre-training classifier and are dropped:
VPT reads the final [CLS] token after ``encoder_norm``.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch

_BLOCK = 'Transformer/encoderblock_{}/'
_DROPPED = ('head/kernel', 'head/bias', 'pre_logits/kernel',
            'pre_logits/bias')


def _linear(kernel: torch.Tensor) -> torch.Tensor:
    """A Flax Dense kernel (in, ...out) as a torch Linear weight (out, in)."""
    return kernel.reshape(kernel.shape[0], -1).t()


def convert_google_vit(
        state: Dict[str, torch.Tensor],
        grid: Optional[Sequence[int]] = None) -> Dict[str, torch.Tensor]:
    """Convert a Google ViT ``.npz`` state to mmpretrain ViT keys.

    Args:
        state (dict): The arrays of the ``.npz`` file as tensors
            (:func:`load_source_checkpoint` reads them).
        grid (Sequence[int], optional): Resize the position embedding to
            this (h, w) patch grid (bicubic), e.g. (32, 32) for 512x512
            inputs with 16x16 patches. Loading into a backbone of another
            size resizes it too, so this is only needed to store a
            resized checkpoint.

    Returns:
        dict: Backbone keys of mmpretrain's ``VisionTransformer`` (and
        ``PromptedViT``).

    Raises:
        ValueError: If a key is not part of the layout, naming it.
    """
    if 'embedding/kernel' not in state:
        raise ValueError("Not a Google ViT .npz: no 'embedding/kernel' (the "
                         'vision_transformer layout, e.g. '
                         'imagenet21k_ViT-B_16.npz, is expected)')
    used = set(_DROPPED)

    def take(key: str) -> torch.Tensor:
        if key not in state:
            raise ValueError(f'Google ViT .npz misses {key!r}')
        used.add(key)
        return state[key].float()

    out = {
        'patch_embed.projection.weight':
        take('embedding/kernel').permute(3, 2, 0, 1),
        'patch_embed.projection.bias': take('embedding/bias'),
        'cls_token': take('cls'),
        'pos_embed': take('Transformer/posembed_input/pos_embedding'),
        'ln1.weight': take('Transformer/encoder_norm/scale'),
        'ln1.bias': take('Transformer/encoder_norm/bias'),
    }
    i = 0
    while f'{_BLOCK.format(i)}LayerNorm_0/scale' in state:
        src, dst = _BLOCK.format(i), f'layers.{i}.'
        att = src + 'MultiHeadDotProductAttention_1/'
        out[dst + 'ln1.weight'] = take(src + 'LayerNorm_0/scale')
        out[dst + 'ln1.bias'] = take(src + 'LayerNorm_0/bias')
        out[dst + 'attn.qkv.weight'] = torch.cat(
            [_linear(take(att + f'{n}/kernel')) for n in
             ('query', 'key', 'value')])
        out[dst + 'attn.qkv.bias'] = torch.cat(
            [take(att + f'{n}/bias').flatten() for n in
             ('query', 'key', 'value')])
        out_kernel = take(att + 'out/kernel')  # (heads, head_dim, d)
        out[dst + 'attn.proj.weight'] = out_kernel.reshape(
            -1, out_kernel.shape[-1]).t()
        out[dst + 'attn.proj.bias'] = take(att + 'out/bias')
        out[dst + 'ln2.weight'] = take(src + 'LayerNorm_2/scale')
        out[dst + 'ln2.bias'] = take(src + 'LayerNorm_2/bias')
        mlp = src + 'MlpBlock_3/'
        out[dst + 'ffn.layers.0.0.weight'] = _linear(
            take(mlp + 'Dense_0/kernel'))
        out[dst + 'ffn.layers.0.0.bias'] = take(mlp + 'Dense_0/bias')
        out[dst + 'ffn.layers.1.weight'] = _linear(
            take(mlp + 'Dense_1/kernel'))
        out[dst + 'ffn.layers.1.bias'] = take(mlp + 'Dense_1/bias')
        i += 1
    unknown = sorted(k for k in state if k not in used)
    if unknown:
        raise ValueError(f'Google ViT .npz key {unknown[0]!r} has no known '
                         'equivalent (this converter reads the '
                         'vision_transformer layout)')
    if grid is not None:
        from mmpretrain.models.utils import resize_pos_embed
        num = out['pos_embed'].shape[1] - 1
        side = int(round(num**0.5))
        out['pos_embed'] = resize_pos_embed(
            out['pos_embed'], (side, side), tuple(grid), 'bicubic', 1)
    return out
