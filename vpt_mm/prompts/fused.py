"""Fused prompts: the exact, cheaper form of layers whose prompts are
replaced at their input.

Such a layer runs on the image tokens alone, attending over
``[K(LN1(P)); K(x)]`` and ``[V(LN1(P)); V(x)]`` (why this equals the token
form: ``docs/en/advanced_guides/prompted_vit.md``, "Fused prompts"). The
layer functions here work on an mmpretrain ``TransformerEncoderLayer``
(``ln1``, ``attn.qkv``, ``attn.proj``, ``ffn``, ``ln2``); the Swin form is in
:mod:`vpt_mm.backbones.swin` and shares :func:`project_heads` and
:func:`checkpointed` (activation checkpointing, ``with_cp``).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

KV = Tuple[torch.Tensor, torch.Tensor]


def check_fusable(layer: nn.Module) -> None:
    """Raise if ``layer`` is not a standard pre-norm attention layer."""
    attn = getattr(layer, 'attn', None)
    for name in ('ln1', 'ln2', 'ffn'):
        if not hasattr(layer, name):
            raise TypeError(f'{type(layer).__name__} has no {name!r}; fused '
                            'prompts need an mmpretrain TransformerEncoder'
                            'Layer')
    if attn is None or not hasattr(attn, 'qkv') or getattr(
            attn, 'v_shortcut', False):
        raise TypeError(f'{type(layer).__name__}.attn is not a plain qkv '
                        'attention; use fuse_prompts=False')


def project_heads(qkv: nn.Linear, x: torch.Tensor, heads: int,
                  part: str) -> torch.Tensor:
    """The queries (``part='q'``) or the keys and values (``'kv'``) of
    tokens through a qkv projection, per head.

    Only that slice of the projection is computed (same FLOPs as the whole
    one for both parts): a fused layer computes its tokens' queries and
    keys/values apart, so that after the keys/values are concatenated with
    the prompts' nothing holds them twice and autograd keeps q and the
    concatenated K/V only, as in the token form.

    Args:
        qkv (nn.Linear): The projection, d -> 3d, rows [q; k; v].
        x (torch.Tensor): (B, N, d) tokens.
        heads (int): Number of attention heads.
        part (str): ``'q'`` or ``'kv'``.

    Returns:
        torch.Tensor: (1 or 2, B, heads, N, d / heads).
    """
    d = qkv.in_features
    rows = slice(0, d) if part == 'q' else slice(d, 3 * d)
    bias = None if qkv.bias is None else qkv.bias[rows]
    out = F.linear(x, qkv.weight[rows], bias)
    B, N = x.shape[:2]
    return out.reshape(B, N, -1, heads, d // heads).permute(2, 0, 3, 1, 4)


def prompt_kv(layer: nn.Module, prompts: torch.Tensor) -> KV:
    """Keys and values of a layer's prompts.

    Args:
        layer (nn.Module): The transformer layer.
        prompts (torch.Tensor): (B', p, d) prompts at the layer input; B' is
            the batch size (per-sample dropout) or 1 (shared by the batch).

    Returns:
        tuple[torch.Tensor, torch.Tensor]: K and V, each (B', heads, p,
        head_dims).
    """
    k, v = project_heads(layer.attn.qkv, layer.ln1(prompts),
                         layer.attn.num_heads, 'kv')
    return k, v


def fused_layer_forward(layer: nn.Module,
                        x: torch.Tensor,
                        kv_prompts: KV,
                        key_mask: Optional[torch.Tensor] = None
                        ) -> torch.Tensor:
    """Run a layer on the image tokens, attending over prompt K/V too.

    Args:
        layer (nn.Module): The transformer layer (see :func:`check_fusable`).
        x (torch.Tensor): (B, N, d) tokens without prompts.
        kv_prompts (tuple): Prompt keys and values from :func:`prompt_kv`,
            batch 1 or B.
        key_mask (torch.Tensor, optional): (B, p + N) bool, the keys
            (prompts first) each sample attends to; for batches whose
            samples have prompt sets of different lengths, padded
            (:class:`~vpt_mm.apis.MultiTaskClassifier`).

    Returns:
        torch.Tensor: (B, N, d), equal to the token form's outputs at the
        non-prompt positions.
    """
    attn = layer.attn
    B, N, C = x.shape
    h = layer.ln1(x)
    q = project_heads(attn.qkv, h, attn.num_heads, 'q')[0]
    kv = project_heads(attn.qkv, h, attn.num_heads, 'kv')
    pk, pv = kv_prompts
    k = torch.cat([pk.to(kv.dtype).expand(B, -1, -1, -1), kv[0]], dim=2)
    v = torch.cat([pv.to(kv.dtype).expand(B, -1, -1, -1), kv[1]], dim=2)
    del kv
    drop = attn.attn_drop if attn.training else 0.0
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                         dropout_p=drop)
    out = out.transpose(1, 2).reshape(B, N, attn.embed_dims)
    out = attn.out_drop(attn.gamma1(attn.proj_drop(attn.proj(out))))
    x = x + out
    return layer.ffn(layer.ln2(x), identity=x)


def masked_layer_forward(layer: nn.Module, x: torch.Tensor,
                         keep: torch.Tensor) -> torch.Tensor:
    """An mmpretrain ``TransformerEncoderLayer`` whose attention ignores the
    keys at ``keep == False`` (the token form of a batch whose samples hold
    prompt sets of different lengths, padded).

    Args:
        layer (nn.Module): The layer (``ln1``, ``attn.qkv``, ``attn.proj``,
            ``ffn``, ``ln2``).
        x (torch.Tensor): (B, L, d) tokens.
        keep (torch.Tensor): (B, L) bool, the keys each sample attends to.

    Returns:
        torch.Tensor: (B, L, d).
    """
    attn = layer.attn
    B, L, C = x.shape
    qkv = attn.qkv(layer.ln1(x)).reshape(B, L, 3, attn.num_heads,
                                         attn.head_dims).permute(2, 0, 3, 1,
                                                                 4)
    drop = attn.attn_drop if attn.training else 0.0
    out = F.scaled_dot_product_attention(
        qkv[0], qkv[1], qkv[2], attn_mask=keep[:, None, None, :],
        dropout_p=drop)
    out = out.transpose(1, 2).reshape(B, L, attn.embed_dims)
    x = x + attn.out_drop(attn.gamma1(attn.proj_drop(attn.proj(out))))
    return layer.ffn(layer.ln2(x), identity=x)


def checkpointed(enabled: bool, fn: Callable, *args: Any) -> Any:
    """``fn(*args)``, through activation checkpointing (non-reentrant) when
    ``enabled`` and gradients flow through a tensor argument (tuples of
    tensors included): only the arguments are kept, and the forward is run
    again during backward. Frozen layers are deterministic in eval mode
    (and the RNG state is restored for the rerun), so results are the
    same as without it.
    """
    if not enabled or not torch.is_grad_enabled():
        return fn(*args)
    tensors = [t for a in args
               for t in (a if isinstance(a, (tuple, list)) else (a, ))]
    if not any(isinstance(t, torch.Tensor) and t.requires_grad
               for t in tensors):
        return fn(*args)
    return checkpoint(fn, *args, use_reentrant=False)
