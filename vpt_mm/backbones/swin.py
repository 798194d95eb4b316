"""PromptedSwin: mmpretrain's SwinTransformer with visual prompts.

Visual Prompt Tuning (Jia et al., ECCV 2022, arXiv 2203.12119), Sec. 4.4
("Swin"): prompts are attended inside every local window. As in the official
implementation (which produced the published numbers), prompt outputs are
carried through patch merging into the next stage and the pooled output
averages the final prompt tokens with the image tokens; the paper's text
(prompts dropped at patch merging, pooling over image tokens) is an option.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.backbones import SwinTransformer
from mmpretrain.models.utils import resize_pos_embed

from ..prompts import PromptConfig, VisualPrompt
from ..registry import register_model
from ..validation import require_str
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


def _window_attention(attn: nn.Module,
                      x: torch.Tensor,
                      hw_shape: Sequence[int],
                      prompts: torch.Tensor,
                      prompt_keep: Optional[torch.Tensor] = None
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Shifted-window self-attention with prompts in every window.

    Mirrors mmpretrain's ``ShiftWindowMSA`` (padding, cyclic shift, window
    partition, relative position bias, shift mask) and prepends each
    sample's prompts to each of that sample's windows.

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
    B, L, C = x.shape
    H, W = int(hw_shape[0]), int(hw_shape[1])
    p = prompts.shape[1]
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

    # Windows are laid out sample-major, (B * nW, N, C), so the prompts of
    # sample b go to windows b * nW ... (b + 1) * nW - 1 and nowhere else.
    windows = attn.window_partition(x, ws).view(-1, ws * ws, C)
    nW = windows.shape[0] // B
    N, T = ws * ws, p + ws * ws
    tokens = torch.cat(
        [prompts.unsqueeze(1).expand(B, nW, p, C).reshape(B * nW, p, C),
         windows], dim=1)

    msa = attn.w_msa
    heads = msa.num_heads
    qkv = msa.qkv(tokens).reshape(B * nW, T, 3, heads, C // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    # Relative position bias between window tokens only; prompts have no
    # position, so every pair involving a prompt gets bias 0.
    bias = msa.relative_position_bias_table[
        msa.relative_position_index.view(-1)].view(N, N, heads)
    bias = F.pad(bias.permute(2, 0, 1), (p, 0, p, 0))
    if shift_mask is not None:
        # The shift mask separates image regions only: prompts attend to,
        # and are attended by, every token of their window.
        bias = bias.unsqueeze(0) + F.pad(shift_mask, (p, 0, p, 0))[:, None]
        q, k, v = (t.reshape(B, nW, heads, T, -1) for t in (q, k, v))
    bias = bias.to(q.dtype)
    if prompt_keep is not None:
        # Padded prompt positions are never attended to (as keys).
        keys = F.pad(prompt_keep, (0, N), value=True)
        off = torch.zeros(keys.shape, dtype=q.dtype, device=q.device)
        off = off.masked_fill(~keys, float('-inf'))
        if shift_mask is not None:  # q: (B, nW, heads, T, dh)
            bias = bias + off[:, None, None, None, :]
        else:  # q: (B * nW, heads, T, dh)
            bias = bias + off.repeat_interleave(nW, 0)[:, None, None, :]
    drop = msa.attn_drop.p if msa.training else 0.0
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias, dropout_p=drop, scale=msa.scale)
    out = out.reshape(B * nW, heads, T, -1).transpose(1, 2).reshape(
        B * nW, T, C)
    out = msa.proj_drop(msa.proj(out))

    prompt_out = out[:, :p].reshape(B, nW, p, C).mean(dim=1)
    x = attn.window_reverse(out[:, p:].reshape(-1, ws, ws, C), Hp, Wp, ws)
    if shift > 0:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    x = x[:, :H, :W, :].reshape(B, H * W, C)
    return x, prompt_out


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
        prompt_keep (torch.Tensor, optional): See :func:`_window_attention`.

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

    Prompts follow the paper's Swin design, made exact where it leaves a
    choice:

    - **Windows.** In a prompted block, each sample's p prompt tokens are
      prepended to each of that sample's windows, so attention runs over
      p + M*M tokens per window. The relative position bias applies between
      window tokens only (pairs involving a prompt get 0: prompts have no
      position), and the shifted-window mask only separates image regions:
      a prompt attends to every token of its window, other prompts included,
      and every window token attends to the prompts. Windows are laid out
      sample-major, so a sample's output never depends on the other samples
      of the batch (the reference implementation expands prompts in an order
      that mixes samples).
    - **Prompt outputs.** A prompt's attention output is averaged over the
      windows of its sample; norms, FFN and residuals then act on it as on
      an image token. In VPT-Deep the next block discards these outputs and
      inserts its own prompts; after the last prompted block of a range, the
      outputs flow on through the rest of the stage (VPT-Shallow).
    - **Stages.** With ``prompt_merging='carry'`` (default, the official
      implementation) prompt outputs go through every patch merging like
      image tokens (each prompt vector repeated for the 2x2 positions, then
      the merging's norm and reduction, :func:`merge_prompts`), so
      VPT-Shallow prompts reach every stage; in VPT-Deep the next stage's
      first block replaces them. ``prompt_merging='drop'`` (the paper's
      text) drops them before every patch merging. Each stage has its own
      prompts at its own width (``prompt.<stage>.embeddings``), all
      initialised uniformly in +-sqrt(6 / (3 * 4 * 4 + C_1)) with the
      stage-1 width C_1, as the official code. ``layers`` ranges count
      blocks over all stages, 1..sum(depths) (1..24 for Swin-B):
      ``deep=True`` prompts every block, ``deep=False`` the first block
      only. ``share='inter'`` / ``'all'`` share prompts within a stage
      (stage widths differ).
    - **Outputs.** ``out_type='featmap'`` (default): as mmpretrain's Swin,
      the normalised image tokens of the ``out_indices`` stages as
      (B, C, H, W) feature maps, without prompts (segmentation, or a
      ``GlobalAveragePooling`` neck). ``out_type='avg_all'``: the official
      classification feature, the mean over the final stage's normalised
      prompt and image tokens, (B, C) (the benchmark configs use it, with no
      neck); ``'avg_featmap'``: the mean over its image tokens only.

    Only ``location='prepend'`` with ``init='random'`` applies to Swin;
    other settings raise :class:`ValueError`. The frozen-backbone contract
    is that of :class:`~vpt_mm.backbones.PromptedViT`.

    Args:
        arch (str | dict): mmpretrain Swin arch (``'tiny'``, ``'small'``,
            ``'base'``, ``'large'`` or a dict). Defaults to ``'base'``.
        img_size (int | tuple): Input size. Defaults to 224.
        prompt_cfg (dict): See :class:`vpt_mm.prompts.PromptConfig`.
            Defaults to VPT-Shallow with one prompt.
        freeze_backbone (bool): Freeze every non-prompt parameter.
            Defaults to True.
        trainable (Sequence[str]): Regular expressions of backbone
            parameter names that also train in the frozen backbone, e.g.
            ``[r'(^|\.)bias$']`` for VPT + Bias. Defaults to ().
        prompt_merging (str): ``'carry'`` (official) or ``'drop'`` (paper
            text). Defaults to ``'carry'``.
        out_type (str): ``'featmap'``, ``'avg_all'`` or ``'avg_featmap'``.
            Defaults to ``'featmap'``.
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

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 224,
                 prompt_cfg: Optional[dict] = None,
                 freeze_backbone: bool = True,
                 trainable: Sequence[str] = (),
                 prompt_merging: str = 'carry',
                 out_type: str = 'featmap',
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
        if cfg.location != 'prepend' or cfg.init != 'random':
            raise ValueError(
                "PromptedSwin supports prompt_cfg location='prepend' with "
                f"init='random', got location={cfg.location!r}, "
                f'init={cfg.init!r}')
        blocks = cfg.layer_ids(sum(self.depths))
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
        self.init_frozen_backbone(freeze_backbone, trainable)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Forward images (B, C, H, W) to the ``out_indices`` feature maps."""
        B = x.shape[0]
        x, hw_shape = self.patch_embed(x)
        if self.use_abs_pos_embed:
            x = x + resize_pos_embed(
                self.absolute_pos_embed, self.patch_resolution, hw_shape,
                self.interpolate_mode, self.num_extra_tokens)
        x = self.drop_after_pos(x)

        outs = []
        prompts = None
        for i, stage in enumerate(self.stages):
            prompt = self.prompt[str(i)] if str(i) in self.prompt else None
            for j, block in enumerate(stage.blocks):
                if prompt is not None and j in prompt.layer_ids:
                    prompts = prompt.layer_prompts(j, B).expand(
                        B, -1, -1).to(x.dtype)
                if prompts is None:
                    x = block(x, hw_shape)
                else:
                    x, prompts = prompted_swin_block(block, x, hw_shape,
                                                     prompts)
            if stage.downsample is not None and self.out_after_downsample:
                x, hw_shape, prompts = self._merge(stage, x, hw_shape,
                                                   prompts)
            if i in self.out_indices:
                outs.append(self._output(i, x, hw_shape, prompts))
            if stage.downsample is not None and not self.out_after_downsample:
                x, hw_shape, prompts = self._merge(stage, x, hw_shape,
                                                   prompts)
        return tuple(outs)

    def _merge(self, stage: nn.Module, x: torch.Tensor,
               hw_shape: Sequence[int], prompts: Optional[torch.Tensor]
               ) -> Tuple[torch.Tensor, Sequence[int], Optional[torch.Tensor]]:
        """Patch merging of the image tokens; the prompts are carried
        (:func:`merge_prompts`) or dropped, by ``prompt_merging``."""
        if prompts is not None:
            prompts = merge_prompts(stage.downsample, prompts) if \
                self.prompt_merging == 'carry' else None
        x, hw_shape = stage.downsample(x, hw_shape)
        return x, hw_shape, prompts

    def _output(self, i: int, x: torch.Tensor, hw_shape: Sequence[int],
                prompts: Optional[torch.Tensor]) -> torch.Tensor:
        """Stage ``i``'s output: a normalised feature map, or the mean of
        the normalised tokens (``avg_all``: prompts included)."""
        norm = getattr(self, f'norm{i}')
        if self.out_type == 'featmap':
            out = norm(x)
            return out.view(x.shape[0], *hw_shape,
                            self.num_features[i]).permute(0, 3,
                                                          1, 2).contiguous()
        if self.out_type == 'avg_all' and prompts is not None:
            x = torch.cat([prompts, x], dim=1)
        return norm(x).mean(dim=1)
