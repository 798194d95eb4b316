"""PromptedSwin: mmpretrain's SwinTransformer with visual prompts.

Visual Prompt Tuning (Jia et al., ECCV 2022, arXiv 2203.12119), Sec. 4.4:
prompts are attended inside every local window. The window attention with
prompts (token and fused forms) is here; the design is described in
``docs/en/advanced_guides/prompted_swin.md``.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.backbones import SwinTransformer
from mmpretrain.models.utils import resize_pos_embed

from ..prompts import PromptConfig, VisualPrompt
from ..prompts.fused import KV, checkpointed, project_heads
from ..prompts.plan import PromptPlan, TaskPrompts
from ..registry import register_model
from ..validation import require_bool, require_str
from .frozen import FrozenBackboneMixin

#: What happens to prompt outputs at patch merging.
PROMPT_MERGING = ('carry', 'drop')
#: Outputs of PromptedSwin.
SWIN_OUT_TYPES = ('featmap', 'avg_all', 'avg_featmap')


def merge_prompts(downsample: nn.Module,
                  prompts: torch.Tensor) -> torch.Tensor:
    """Carry prompt tokens (B, p, C) through a patch merging, as the
    official implementation: each prompt's vector is repeated for the 2x2
    positions the merging concatenates, then goes through the merging's norm
    and reduction, giving (B, p, 2C).

    mmpretrain's ``PatchMerging`` concatenates with ``nn.Unfold``, whose
    channels are channel-major (c * 4 + position), so the repeat is
    ``repeat_interleave``; the official (position-major) concatenation is
    the same vector once the converter has reordered the reduction weights.
    """
    kernel = downsample.sampler.kernel_size
    k = kernel[0] * kernel[1] if isinstance(kernel, tuple) else kernel**2
    y = prompts.repeat_interleave(k, dim=-1)
    if getattr(downsample, 'use_post_norm', False):
        y = downsample.reduction(y)
        return downsample.norm(y) if downsample.norm else y
    y = downsample.norm(y) if downsample.norm else y
    return downsample.reduction(y)


def _windows(attn: nn.Module, x: torch.Tensor, hw_shape: Sequence[int]
             ) -> Tuple[torch.Tensor, Optional[torch.Tensor], tuple]:
    """Pad, cyclically shift and partition image tokens into windows, as
    mmpretrain's ``ShiftWindowMSA``.

    Returns:
        tuple: The windows (B * nW, M*M, C), laid out sample-major; the
        shift mask (nW, M*M, M*M) or None; the geometry for
        ``_unwindow``.
    """
    B, L, C = x.shape
    H, W = int(hw_shape[0]), int(hw_shape[1])
    ws, shift = attn.window_size, attn.shift_size
    if min(H, W) == ws:
        shift = shift if attn.pad_small_map else 0
    elif min(H, W) < ws and not attn.pad_small_map:
        raise ValueError(
            f'Swin feature map ({H}, {W}) is smaller than the window size '
            f'{ws}; set pad_small_map=True or use a larger input')
    x = x.view(B, H, W, C)
    pad_r, pad_b = (ws - W % ws) % ws, (ws - H % ws) % ws
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    Hp, Wp = x.shape[1], x.shape[2]
    if shift > 0:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    shift_mask = attn.get_attn_mask((Hp, Wp), ws, shift, device=x.device)
    windows = attn.window_partition(x, ws).view(-1, ws * ws, C)
    return windows, shift_mask, (B, H, W, Hp, Wp, shift)


def _unwindow(attn: nn.Module, windows: torch.Tensor,
              geometry: tuple) -> torch.Tensor:
    """Inverse of ``_windows``: (B * nW, M*M, C) -> (B, H*W, C)."""
    B, H, W, Hp, Wp, shift = geometry
    ws, C = attn.window_size, windows.shape[-1]
    x = attn.window_reverse(windows.reshape(-1, ws, ws, C), Hp, Wp, ws)
    if shift > 0:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    return x[:, :H, :W, :].reshape(B, H * W, C)


def _window_sdpa(msa: nn.Module, q: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor, shift_mask: Optional[torch.Tensor],
                 p: int, key_off: Optional[torch.Tensor] = None
                 ) -> torch.Tensor:
    """Window attention with p prompt keys in front of the window's keys.

    The relative position bias applies between window tokens only; prompts
    have no position, so every pair involving a prompt gets bias 0, and the
    shift mask separates image regions only (prompts attend to, and are
    attended by, every token of their window). Queries are the window's
    tokens, with the prompts in front of them (token form) or without
    (fused form).

    Args:
        msa (WindowMSA): The block's window attention (its bias table,
            scale and dropout).
        q (torch.Tensor): (B * nW, heads, Tq, dh) queries, Tq = p + M*M or
            M*M.
        k, v (torch.Tensor): (B * nW, heads, p + M*M, dh).
        shift_mask (torch.Tensor, optional): (nW, M*M, M*M).
        p (int): Number of prompt keys.
        key_off (torch.Tensor, optional): (B * nW, p + M*M) additive key
            mask (0 or -inf).

    Returns:
        torch.Tensor: (B * nW, heads, Tq, dh).
    """
    BnW, heads, Tq, dh = q.shape
    Tk = k.shape[2]
    N = Tk - p
    pad = (p, 0, Tq - N, 0)
    bias = msa.relative_position_bias_table[
        msa.relative_position_index.view(-1)].view(N, N, heads)
    bias = F.pad(bias.permute(2, 0, 1), pad).unsqueeze(0)
    drop = msa.attn_drop.p if msa.training else 0.0
    if shift_mask is None:  # one (1, heads, Tq, Tk) mask for all windows
        if key_off is not None:
            bias = bias + key_off[:, None, None, :]
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=drop,
            scale=msa.scale)
    # Each of the nW windows of a sample has its own mask, the same for
    # every sample: laid out as (B, nW * heads, T, dh), the (1, nW * heads,
    # Tq, Tk) mask broadcasts over the batch with stride 0 and is saved
    # once (docs/en/advanced_guides/prompted_swin.md, "Shift mask memory").
    nW = shift_mask.shape[0]
    B = BnW // nW
    bias = (bias + F.pad(shift_mask, pad)[:, None]).reshape(
        1, nW * heads, Tq, Tk)
    if key_off is not None:  # the same key mask for a sample's windows
        bias = bias + key_off[::nW, None, None, :]
    out = F.scaled_dot_product_attention(
        q.reshape(B, nW * heads, Tq, dh), k.reshape(B, nW * heads, Tk, dh),
        v.reshape(B, nW * heads, Tk, dh), attn_mask=bias.to(q.dtype),
        dropout_p=drop, scale=msa.scale)
    return out.reshape(BnW, heads, Tq, dh)


def _key_off(prompt_keep: Optional[torch.Tensor], N: int, nW: int,
             dtype: torch.dtype) -> Optional[torch.Tensor]:
    """The additive key mask (B * nW, p + N) of each window: -inf at the
    prompt positions a sample does not attend to (padding of a batch that
    mixes prompt sets of several lengths), 0 elsewhere; None without
    ``prompt_keep`` (B, p)."""
    if prompt_keep is None:
        return None
    keys = F.pad(prompt_keep, (0, N), value=True)
    off = torch.zeros(keys.shape, dtype=dtype, device=keys.device)
    return off.masked_fill(~keys, float('-inf')).repeat_interleave(nW, 0)


def _window_attention(attn: nn.Module,
                      x: torch.Tensor,
                      hw_shape: Sequence[int],
                      prompts: torch.Tensor,
                      prompt_keep: Optional[torch.Tensor] = None
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Shifted-window self-attention with prompts in every window (the
    token form).

    Mirrors mmpretrain's ``ShiftWindowMSA`` (padding, cyclic shift, window
    partition, relative position bias, shift mask) and prepends each
    sample's prompts to each of that sample's windows (``_window_sdpa``).

    Args:
        attn (ShiftWindowMSA): The block's attention module.
        x (torch.Tensor): (B, H*W, C) normalised image tokens.
        hw_shape (Sequence[int]): (H, W).
        prompts (torch.Tensor): (B, p, C) normalised prompt tokens, p >= 0.
        prompt_keep (torch.Tensor, optional): (B, p) bool: the prompts each
            sample attends to (the others are padding of a batch mixing
            prompt sets of several lengths, :mod:`vpt_mm.apis.multitask`).

    Returns:
        tuple[torch.Tensor, torch.Tensor]: The image-token outputs
        (B, H*W, C) and the prompt outputs (B, p, C), averaged over the
        sample's windows.
    """
    B, _, C = x.shape
    p = prompts.shape[1]
    windows, shift_mask, geometry = _windows(attn, x, hw_shape)
    # Windows are laid out sample-major, (B * nW, N, C), so the prompts of
    # sample b go to windows b * nW ... (b + 1) * nW - 1 and nowhere else.
    nW = windows.shape[0] // B
    N, T = windows.shape[1], p + windows.shape[1]
    tokens = torch.cat(
        [prompts.unsqueeze(1).expand(B, nW, p, C).reshape(B * nW, p, C),
         windows], dim=1)
    msa = attn.w_msa
    heads = msa.num_heads
    qkv = msa.qkv(tokens).reshape(B * nW, T, 3, heads, C // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    key_off = _key_off(prompt_keep, N, nW, q.dtype)
    out = _window_sdpa(msa, q, k, v, shift_mask, p, key_off)
    out = out.transpose(1, 2).reshape(B * nW, T, C)
    out = msa.proj_drop(msa.proj(out))
    prompt_out = out[:, :p].reshape(B, nW, p, C).mean(dim=1)
    return _unwindow(attn, out[:, p:], geometry), prompt_out


def _fused_window_attention(attn: nn.Module, x: torch.Tensor,
                            hw_shape: Sequence[int], kv: KV,
                            prompt_keep: Optional[torch.Tensor] = None
                            ) -> torch.Tensor:
    """Shifted-window attention of the image tokens over the prompts'
    keys/values as well (the fused form): equal to the image-token outputs
    of ``_window_attention`` with those prompts.

    Args:
        attn (ShiftWindowMSA): The block's attention module.
        x (torch.Tensor): (B, H*W, C) normalised image tokens.
        hw_shape (Sequence[int]): (H, W).
        kv (tuple): Prompt keys and values, each (B', heads, p, dh) with
            B' = 1 (shared by the batch) or B (:func:`swin_prompt_kv`, or
            learnt by VPT-prefix).
        prompt_keep (torch.Tensor, optional): (B, p) bool, the prompt keys
            each sample attends to (see ``_window_attention``).

    Returns:
        torch.Tensor: (B, H*W, C).
    """
    B, _, C = x.shape
    windows, shift_mask, geometry = _windows(attn, x, hw_shape)
    BnW, N, _ = windows.shape
    msa = attn.w_msa
    heads = msa.num_heads
    dh = C // heads
    q = project_heads(msa.qkv, windows, heads, 'q')[0]
    kvw = project_heads(msa.qkv, windows, heads, 'kv')
    pk, pv = kv
    p = pk.shape[2]

    def per_window(t: torch.Tensor) -> torch.Tensor:
        # A sample's prompt K/V go to each of its nW windows.
        t = t.to(q.dtype).unsqueeze(1).expand(B, BnW // B, heads, p, dh)
        return t.reshape(BnW, heads, p, dh)

    k = torch.cat([per_window(pk), kvw[0]], dim=2)
    v = torch.cat([per_window(pv), kvw[1]], dim=2)
    del kvw
    out = _window_sdpa(msa, q, k, v, shift_mask, p,
                       _key_off(prompt_keep, N, BnW // B, q.dtype))
    out = out.transpose(1, 2).reshape(BnW, N, C)
    out = msa.proj_drop(msa.proj(out))
    return _unwindow(attn, out, geometry)


def swin_prompt_kv(block: nn.Module, prompts: torch.Tensor) -> KV:
    """Keys and values of a Swin block's prompts.

    Args:
        block (SwinBlock): The block.
        prompts (torch.Tensor): (B', p, C) prompts at the block input.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: K and V, each (B', heads, p,
        C / heads), the same in every window.
    """
    msa = block.attn.w_msa
    k, v = project_heads(msa.qkv, block.norm1(prompts), msa.num_heads, 'kv')
    return k, v


def fused_swin_block(block: nn.Module, x: torch.Tensor,
                     hw_shape: Sequence[int], kv: KV,
                     prompt_keep: Optional[torch.Tensor] = None
                     ) -> torch.Tensor:
    """Run an mmpretrain ``SwinBlock`` on the image tokens alone, attending
    over its prompts' keys/values too (``_fused_window_attention``;
    ``prompt_keep`` masks padded prompt keys).

    Equal to the image-token outputs of :func:`prompted_swin_block` for a
    block whose prompt outputs are discarded: the prompts' queries,
    projection, norms and FFN are never computed.
    """
    y = _fused_window_attention(block.attn, block.norm1(x), hw_shape, kv,
                                prompt_keep)
    x = x + block.attn.drop(y)
    return block.ffn(block.norm2(x), identity=x)


def prompted_swin_block(block: nn.Module,
                        x: torch.Tensor,
                        hw_shape: Sequence[int],
                        prompts: torch.Tensor,
                        prompt_keep: Optional[torch.Tensor] = None
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run an mmpretrain ``SwinBlock`` on image tokens plus prompts.

    The prompts go through the block like image tokens (norms, FFN,
    residuals, drop-path per sample); in attention they join every window of
    their sample and their outputs are averaged over those windows.

    Args:
        block (SwinBlock): The block.
        x (torch.Tensor): (B, H*W, C) image tokens.
        hw_shape (Sequence[int]): (H, W).
        prompts (torch.Tensor): (B, p, C) prompt tokens.
        prompt_keep (torch.Tensor, optional): See ``_window_attention``.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: Image tokens and prompt tokens
        after the block.
    """
    p = prompts.shape[1]
    identity = torch.cat([prompts, x], dim=1)
    y = block.norm1(identity)
    x_out, p_out = _window_attention(block.attn, y[:, p:], hw_shape,
                                     y[:, :p], prompt_keep)
    y = identity + block.attn.drop(torch.cat([p_out, x_out], dim=1))
    y = block.ffn(block.norm2(y), identity=y)
    return y[:, p:], y[:, :p]


@register_model()
class PromptedSwin(FrozenBackboneMixin, SwinTransformer):
    r"""Swin Transformer with learnable visual prompts, backbone frozen.

    Each sample's prompts join every window of that sample (no position
    bias, not split by the shift mask), are averaged over those windows,
    go through the patch mergings (``prompt_merging='carry'``, the official
    code) or are dropped there, and enter ``avg_all`` pooling. Blocks whose
    prompt outputs nobody reads run in the exact fused form
    (``fused_layers``, global block indices); VPT-prefix blocks always
    do. The frozen-backbone contract is :class:`PromptedViT`'s. The design
    and where it differs from the paper's text:
    ``docs/en/advanced_guides/prompted_swin.md``.

    Args:
        arch (str | dict): mmpretrain Swin arch (``'tiny'``, ``'small'``,
            ``'base'``, ``'large'`` or a dict). Defaults to ``'base'``.
        img_size (int | tuple): Input size. Defaults to 224.
        prompt_cfg (dict): As for :class:`PromptedViT`.
        freeze_backbone (bool): As for :class:`PromptedViT`.
        trainable (Sequence[str]): As for :class:`PromptedViT`.
        prompt_merging (str): ``'carry'`` (official) or ``'drop'`` (paper
            text). Defaults to ``'carry'``.
        out_type (str): ``'featmap'``, ``'avg_all'`` or ``'avg_featmap'``.
            Defaults to ``'featmap'``.
        fuse_prompts (bool): Use the fused form where it is exact.
            Defaults to True.
        **kwargs: Other arguments of mmpretrain's ``SwinTransformer``
            (``window_size``, ``out_indices``, ``pad_small_map``, ...).

    Examples:
        >>> from vpt_mm.backbones import PromptedSwin
        >>> arch = dict(embed_dims=32, depths=[2, 2], num_heads=[2, 4])
        >>> model = PromptedSwin(arch=arch, img_size=56, window_size=7,
        ...                      out_indices=(1, ),
        ...                      prompt_cfg=dict(num_tokens=5, deep=True))
        >>> model(torch.rand(2, 3, 56, 56))[0].shape
        torch.Size([2, 64, 7, 7])
    """

    UPSTREAM = SwinTransformer
    #: ``out_type`` too: mmpretrain's Swin returns feature maps only (pool
    #: them with a ``GlobalAveragePooling`` neck).
    OWN_ARGS = FrozenBackboneMixin.OWN_ARGS + ('prompt_merging', 'out_type',
                                               'fuse_prompts')

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 224,
                 prompt_cfg: Optional[dict] = None,
                 freeze_backbone: bool = True,
                 trainable: Sequence[str] = (),
                 prompt_merging: str = 'carry',
                 out_type: str = 'featmap',
                 fuse_prompts: bool = True,
                 **kwargs) -> None:
        super().__init__(arch=arch, img_size=img_size, **kwargs)
        if require_str('prompt_merging', prompt_merging) not in \
                PROMPT_MERGING:
            raise ValueError(f'Unknown prompt_merging {prompt_merging!r}; '
                             f'choose from {PROMPT_MERGING}')
        if require_str('out_type', out_type) not in SWIN_OUT_TYPES:
            raise ValueError(f'Unknown PromptedSwin out_type {out_type!r}; '
                             f'choose from {SWIN_OUT_TYPES}')
        last = len(self.stages) - 1
        if out_type != 'featmap' and tuple(self.out_indices) != (last, ):
            raise ValueError(
                f"out_type={out_type!r} pools the last stage: out_indices "
                f'must be ({last}, ), got {tuple(self.out_indices)}')
        self.prompt_merging = prompt_merging
        self.out_type = out_type
        cfg = PromptConfig.from_dict(prompt_cfg or {})
        if cfg.location not in ('prepend', 'prefix') or cfg.init != 'random':
            raise ValueError(
                "PromptedSwin supports prompt_cfg location='prepend' or "
                f"'prefix' with init='random', got location="
                f'{cfg.location!r}, init={cfg.init!r}')
        if cfg.location == 'prefix' and out_type == 'avg_all':
            raise ValueError(
                "out_type 'avg_all' pools prompt tokens, but prompt location "
                "'prefix' adds none; use out_type='avg_featmap'")
        self.prompt_location = cfg.location
        blocks = cfg.layer_ids(sum(self.depths))
        self.prompted_blocks = tuple(blocks)
        patch_size = self.patch_embed.projection.kernel_size
        self.prompt = nn.ModuleDict()
        first = 0
        res = self.patch_resolution
        for i, stage in enumerate(self.stages):
            depth = len(stage.blocks)
            local = [b - first for b in blocks if first <= b < first + depth]
            if local:
                stage_cfg = dataclasses.replace(
                    cfg, deep=False, layers=(local[0] + 1, local[-1] + 1))
                self.prompt[str(i)] = VisualPrompt(
                    stage_cfg,
                    embed_dims=stage.embed_dims,
                    num_layers=depth,
                    patch_size=patch_size,
                    grid_size=res,
                    init_dims=self.embed_dims)
            first += depth
            res = ((res[0] + 1) // 2, (res[1] + 1) // 2)
        self.fuse(require_bool('fuse_prompts', fuse_prompts))
        self.init_frozen_backbone(freeze_backbone, trainable)

    def fuse(self, enabled: bool = True) -> None:
        """Switch between the fused and the token form of the prompts (see
        the class description); exact both ways, at any time.

        Args:
            enabled (bool): Fused form where exact (True) or the token form
                everywhere (False). Defaults to True.
        """
        self.fuse_prompts = bool(enabled)
        self.fused_layers = self._fused_layers(enabled)

    def _fused_layers(self, enabled: bool) -> Tuple[int, ...]:
        """The blocks that run fused with ``fuse_prompts=enabled``."""
        if self.prompt_location == 'prefix':
            # Learnt keys/values have no token form: always "fused".
            return self.prompted_blocks
        if not enabled:
            return ()
        return tuple(b for b in self.prompted_blocks
                     if not self._reads_prompt_outputs(b))

    def _reads_prompt_outputs(self, block: int) -> bool:
        """Whether anything reads the prompt outputs of global block
        ``block`` (the next block, through a patch merging when carried, or
        the pooled output)."""
        if block == sum(self.depths) - 1:
            return self.out_type == 'avg_all'
        if block + 1 in self.prompted_blocks:
            return False  # replaced at the next block's input
        stage_ends = {end - 1 for end in itertools.accumulate(self.depths)}
        return not (block in stage_ends and self.prompt_merging == 'drop')

    def unused_pretrained_keys(self, keys: Sequence[str]) -> list:
        """See :meth:`FrozenBackboneMixin.unused_pretrained_keys`; also the
        final classification norm (``norm.``) of mmseg's Swin checkpoints
        (``swin2mmseg.py`` keeps it; mmseg's Swin, which has per-stage
        norms only, does not load it either)."""
        return super().unused_pretrained_keys(keys) + [
            k for k in keys if k.startswith('norm.')]

    def task_prompts(self, fuse: Optional[bool] = None) -> TaskPrompts:
        """This model's prompts as one task of a :class:`PromptPlan`:
        block indices over all stages, each with its stage's prompts.

        Args:
            fuse (bool, optional): Fused form where exact (True) or the
                token form (False); by default as :meth:`fuse` set it.
        """
        layers = {}
        first = 0
        for i, stage in enumerate(self.stages):
            prompt = self.prompt[str(i)] if str(i) in self.prompt else None
            if prompt is not None:
                layers.update({first + j: (prompt, j)
                               for j in prompt.layer_ids})
            first += len(stage.blocks)
        num_tokens = next(iter(self.prompt.values())).num_tokens
        return TaskPrompts(layers, self._fused_for(fuse), num_tokens)

    def forward(self, x: torch.Tensor,
                plan: Optional[PromptPlan] = None) -> Tuple[torch.Tensor, ...]:
        """Forward images (B, C, H, W) to the ``out_indices`` outputs.

        Args:
            x (torch.Tensor): Images.
            plan (PromptPlan, optional): Each sample's prompts
                (:meth:`prompt_plan`).
        """
        plan = self.prompt_plan(plan)
        B = x.shape[0]
        x, hw_shape = self.patch_embed(x)
        if self.use_abs_pos_embed:
            x = x + resize_pos_embed(
                self.absolute_pos_embed, self.patch_resolution, hw_shape,
                self.interpolate_mode, self.num_extra_tokens)
        x = self.drop_after_pos(x)

        outs = []
        prompts = None
        first = 0
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage.blocks):
                if plan.is_fused(first + j):
                    kv, keep = plan.kv(first + j, self._prompt_kv(block, x),
                                       B)
                    x = checkpointed(block.with_cp, fused_swin_block, block,
                                     x, hw_shape, kv, keep)
                    prompts = None  # never read (see _reads_prompt_outputs)
                    continue
                prompts = plan.replace(first + j, prompts, x)
                if prompts is None:
                    x = block(x, hw_shape)
                else:
                    x, prompts = checkpointed(block.with_cp,
                                              prompted_swin_block, block, x,
                                              hw_shape, prompts,
                                              plan.key_mask())
            first += len(stage.blocks)
            if stage.downsample is not None and self.out_after_downsample:
                x, hw_shape, prompts = self._merge(stage, x, hw_shape,
                                                   prompts, plan)
            if i in self.out_indices:
                outs.append(self._output(i, x, hw_shape, prompts, plan))
            if stage.downsample is not None and not self.out_after_downsample:
                x, hw_shape, prompts = self._merge(stage, x, hw_shape,
                                                   prompts, plan)
        return tuple(outs)

    def _prompt_kv(self, block: nn.Module, x: torch.Tensor
                   ) -> Callable[[VisualPrompt, int, int], KV]:
        """How ``block`` makes one prompt module's keys/values (learnt,
        for VPT-prefix), computed at every forward."""
        heads = block.attn.w_msa.num_heads

        def kv_of(prompt: VisualPrompt, j: int, batch_size: int) -> KV:
            if prompt.location == 'prefix':
                k, v = prompt.prefix_kv(j, heads, batch_size)
                return k.to(x.dtype), v.to(x.dtype)
            prompts = prompt.layer_prompts(j, batch_size).to(x.dtype)
            return swin_prompt_kv(block, prompts)

        return kv_of

    def _merge(self, stage: nn.Module, x: torch.Tensor,
               hw_shape: Sequence[int], prompts: Optional[torch.Tensor],
               plan: PromptPlan
               ) -> Tuple[torch.Tensor, Sequence[int], Optional[torch.Tensor]]:
        """Patch merging of the image tokens; the prompts are carried
        (:func:`merge_prompts`) or dropped, by ``prompt_merging``."""
        if prompts is not None:
            if self.prompt_merging == 'carry':
                prompts = merge_prompts(stage.downsample, prompts)
            else:
                prompts = None
                plan.drop()
        x, hw_shape = stage.downsample(x, hw_shape)
        return x, hw_shape, prompts

    def _output(self, i: int, x: torch.Tensor, hw_shape: Sequence[int],
                prompts: Optional[torch.Tensor],
                plan: PromptPlan) -> torch.Tensor:
        """Stage ``i``'s output: a normalised feature map, or the mean of
        the normalised tokens (``avg_all``: prompts included)."""
        norm = getattr(self, f'norm{i}')
        if self.out_type == 'featmap':
            out = norm(x)
            return out.view(x.shape[0], *hw_shape,
                            self.num_features[i]).permute(0, 3,
                                                          1, 2).contiguous()
        if self.out_type == 'avg_all' and prompts is not None:
            if plan.key_mask() is None:
                return norm(torch.cat([prompts, x], dim=1)).mean(dim=1)
            return plan.mean(norm(prompts), norm(x))
        return norm(x).mean(dim=1)
