"""PromptedSwin: mmpretrain's SwinTransformer with visual prompts.

Visual Prompt Tuning (Jia et al., ECCV 2022, arXiv 2203.12119), Sec. 4.4
("Swin"): prompts are attended inside every local window and ignored by
patch merging.
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
from .frozen import FrozenBackboneMixin


def _window_attention(attn: nn.Module, x: torch.Tensor,
                      hw_shape: Sequence[int],
                      prompts: torch.Tensor) -> Tuple[torch.Tensor,
                                                      torch.Tensor]:
    """Shifted-window self-attention with prompts in every window.

    Mirrors mmpretrain's ``ShiftWindowMSA`` (padding, cyclic shift, window
    partition, relative position bias, shift mask) and prepends each
    sample's prompts to each of that sample's windows.

    Args:
        attn (ShiftWindowMSA): The block's attention module.
        x (torch.Tensor): (B, H*W, C) normalised image tokens.
        hw_shape (Sequence[int]): (H, W).
        prompts (torch.Tensor): (B, p, C) normalised prompt tokens, p >= 0.

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
    drop = msa.attn_drop.p if msa.training else 0.0
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias.to(q.dtype), dropout_p=drop, scale=msa.scale)
    out = out.reshape(B * nW, heads, T, -1).transpose(1, 2).reshape(
        B * nW, T, C)
    out = msa.proj_drop(msa.proj(out))

    prompt_out = out[:, :p].reshape(B, nW, p, C).mean(dim=1)
    x = attn.window_reverse(out[:, p:].reshape(-1, ws, ws, C), Hp, Wp, ws)
    if shift > 0:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    x = x[:, :H, :W, :].reshape(B, H * W, C)
    return x, prompt_out


def prompted_swin_block(block: nn.Module, x: torch.Tensor,
                        hw_shape: Sequence[int], prompts: torch.Tensor) -> \
        Tuple[torch.Tensor, torch.Tensor]:
    """Run an mmpretrain ``SwinBlock`` on image tokens plus prompts.

    The prompts go through the block like image tokens (norms, FFN,
    residuals, drop-path per sample); in attention they join every window of
    their sample and their outputs are averaged over those windows.

    Args:
        block (SwinBlock): The block.
        x (torch.Tensor): (B, H*W, C) image tokens.
        hw_shape (Sequence[int]): (H, W).
        prompts (torch.Tensor): (B, p, C) prompt tokens.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: Image tokens and prompt tokens
        after the block.
    """
    p = prompts.shape[1]
    identity = torch.cat([prompts, x], dim=1)
    y = block.norm1(identity)
    x_out, p_out = _window_attention(block.attn, y[:, p:], hw_shape,
                                     y[:, :p])
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
    - **Stages.** Prompts are dropped before every patch merging, so they
      never reach the next stage or the output. Each stage has its own
      prompts at its own width (``prompt.<stage>.embeddings``), initialised
      uniformly in +-sqrt(6 / (3 * 4 * 4 + C_stage)) (patch size 4).
      ``layers`` ranges count blocks over all stages, 1..sum(depths)
      (1..24 for Swin-B): ``deep=True`` prompts every block, ``deep=False``
      the first block only (so prompts live in stage 1). ``share='inter'`` /
      ``'all'`` share prompts within a stage (stage widths differ).
    - **Outputs.** As mmpretrain's Swin: the normalised image tokens of the
      ``out_indices`` stages as (B, C, H, W) feature maps, without prompts.
      For classification a ``GlobalAveragePooling`` neck then averages the
      final stage's image tokens, as mmpretrain's Swin classifiers do.

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
                 **kwargs) -> None:
        super().__init__(arch=arch, img_size=img_size, **kwargs)
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
                    grid_size=res)
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
        for i, stage in enumerate(self.stages):
            prompt = self.prompt[str(i)] if str(i) in self.prompt else None
            prompts = None
            for j, block in enumerate(stage.blocks):
                if prompt is not None and j in prompt.layer_ids:
                    prompts = prompt.layer_prompts(j, B).expand(
                        B, -1, -1).to(x.dtype)
                if prompts is None:
                    x = block(x, hw_shape)
                else:
                    x, prompts = prompted_swin_block(block, x, hw_shape,
                                                     prompts)
            # Prompt outputs end here: patch merging ignores them.
            if stage.downsample is not None and self.out_after_downsample:
                x, hw_shape = stage.downsample(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(x)
                outs.append(
                    out.view(B, *hw_shape, self.num_features[i]).permute(
                        0, 3, 1, 2).contiguous())
            if stage.downsample is not None and not self.out_after_downsample:
                x, hw_shape = stage.downsample(x, hw_shape)
        return tuple(outs)
