"""PromptedViT: mmpretrain's VisionTransformer with visual prompts.

Visual Prompt Tuning (Jia et al., ECCV 2022, arXiv 2203.12119).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed

from ..prompts import VisualPrompt
from ..prompts.fused import (
    KV,
    check_fusable,
    fused_layer_forward,
    masked_layer_forward,
    prompt_kv,
)
from ..prompts.plan import PromptPlan
from ..registry import register_model
from ..validation import require_bool
from .frozen import FrozenBackboneMixin
from .sequence import PromptedSequenceMixin


def _check_upstream_args(kwargs: dict) -> None:
    """Refuse arguments mmpretrain's ``VisionTransformer`` does not take,
    naming them: those of its other ViT classes (EVA-02's ``ViTEVA02``,
    ``BEiTViT``) among them."""
    import inspect
    known = set(inspect.signature(VisionTransformer.__init__).parameters)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(
            f'PromptedViT prompts mmpretrain\'s VisionTransformer, which '
            f'takes no {unknown}: arguments of its other ViT classes (EVA, '
            'BEiT: BEiTViT, ViTEVA02) are not supported; for EVA-02 use '
            "PromptedTimmViT(model_name='eva02_base_patch14_224')")


@register_model()
class PromptedViT(PromptedSequenceMixin, VisionTransformer):
    r"""Vision Transformer with learnable visual prompts, backbone frozen.

    The sequence is ``[CLS, prompts, patches]``: prompts enter after the
    position embedding, as :class:`vpt_mm.prompts.VisualPrompt` makes them
    and the :class:`~vpt_mm.prompts.plan.PromptPlan` of the forward says.
    Layers whose prompts are replaced at their input and never read run in
    the exact fused form (``fused_layers``); every non-prompt parameter
    is frozen and the frozen modules stay in eval mode. How and why:
    ``docs/en/advanced_guides/prompted_vit.md``.

    Args:
        arch (str | dict): mmpretrain ViT arch, e.g. ``'b'``, ``'l'``,
            ``'h'``. Defaults to ``'base'``.
        img_size (int | tuple): Pre-training input size. Defaults to 224.
        patch_size (int): Defaults to 16.
        out_type (str): ``'cls_token'`` (default), ``'raw'``,
            ``'featmap'``, ``'avg_featmap'`` (image-pool), ``'avg_prompt'``
            (prompt-pool) or ``'avg_all'`` (global-pool); pools read the
            final norm's output.
        prompt_cfg (dict): See :class:`vpt_mm.prompts.PromptConfig`.
            Defaults to VPT-Shallow with one prompt.
        freeze_backbone (bool): Freeze every non-prompt parameter.
            Defaults to True.
        trainable (Sequence[str]): Regular expressions of backbone
            parameter names that also train in the frozen backbone, e.g.
            ``[r'(^|\.)bias$']`` for VPT + Bias. Defaults to ().
        fuse_prompts (bool): Use the fused form where it is exact.
            Defaults to True.
        with_cp (bool): Activation checkpointing of every layer that
            gradients flow through (as mmpretrain's Swin ``with_cp``): less
            training memory for one more forward of those layers, same
            results. Defaults to False.
        **kwargs: Other arguments of mmpretrain's ``VisionTransformer``.

    Examples:
        >>> from vpt_mm.backbones import PromptedViT
        >>> model = PromptedViT(arch='deit-tiny', img_size=32, patch_size=8,
        ...                     prompt_cfg=dict(num_tokens=5, deep=True))
        >>> model(torch.rand(2, 3, 32, 32))[0].shape
        torch.Size([2, 192])
    """

    UPSTREAM = VisionTransformer
    OWN_ARGS = FrozenBackboneMixin.OWN_ARGS + ('fuse_prompts', 'with_cp')

    @classmethod
    def unprompted_cfg(cls, cfg: dict) -> dict:
        """See :meth:`FrozenBackboneMixin.unprompted_cfg`.

        Raises:
            ValueError: For ``out_type`` ``'avg_prompt'`` / ``'avg_all'``,
                which pool prompts (choose the unprompted readout).
        """
        if cfg.get('out_type') in ('avg_prompt', 'avg_all'):
            raise ValueError(
                f"out_type {cfg['out_type']!r} pools prompt tokens: the "
                "backbone without prompts has no such output; set out_type "
                "(e.g. 'cls_token') first")
        return super().unprompted_cfg(cfg)

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 out_type: str = 'cls_token',
                 prompt_cfg: Optional[dict] = None,
                 freeze_backbone: bool = True,
                 trainable: Sequence[str] = (),
                 fuse_prompts: bool = True,
                 with_cp: bool = False,
                 **kwargs) -> None:
        _check_upstream_args(kwargs)
        super().__init__(
            arch=arch,
            img_size=img_size,
            patch_size=patch_size,
            in_channels=in_channels,
            out_type=out_type,
            **kwargs)
        # mmpretrain adds an untrained LayerNorm for 'avg_featmap'; the
        # paper's pools read the final-norm output directly.
        if hasattr(self, 'ln2'):
            del self.ln2
        self.prompt = VisualPrompt(
            prompt_cfg or {},
            embed_dims=self.embed_dims,
            num_layers=self.num_layers,
            patch_size=patch_size,
            grid_size=self.patch_resolution,
            in_channels=in_channels)
        self._check_pooled_prompts()
        if (self.prompt.location == 'concat-channel'
                and self.patch_embed.norm is not None):
            raise ValueError("prompt location 'concat-channel' needs a patch "
                             'embedding without norm')
        self.with_cp = require_bool('with_cp', with_cp)
        self.fuse(require_bool('fuse_prompts', fuse_prompts))
        self.init_frozen_backbone(freeze_backbone, trainable)

    def _blocks(self) -> nn.ModuleList:
        return self.layers

    def _check_fusable(self, i: int) -> None:
        check_fusable(self.layers[i])

    @staticmethod
    def _layer_prompt_kv(layer: nn.Module, prompts: torch.Tensor) -> KV:
        return prompt_kv(layer, prompts)

    def _token_layer(self, i: int, x: torch.Tensor,
                     keep: Optional[torch.Tensor]) -> torch.Tensor:
        """Layer ``i`` on a sequence with its prompts (``keep``: the keys
        each sample attends to, for padded prompt sets)."""
        if keep is None:
            return self.layers[i](x)
        return masked_layer_forward(self.layers[i], x, keep)

    def _fused_layer(self, i: int, x: torch.Tensor, kv: KV,
                     keep: Optional[torch.Tensor]) -> torch.Tensor:
        """Layer ``i`` on a sequence without prompts, attending over their
        keys/values ``kv``."""
        return fused_layer_forward(self.layers[i], x, kv, keep)

    def _embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embed pixel-space prompt patches with the frozen projection."""
        tokens, _ = self.patch_embed(pixels)
        return tokens[:, 0]

    def forward(self, x: torch.Tensor,
                plan: Optional[PromptPlan] = None) -> Tuple[torch.Tensor, ...]:
        """The ``out_indices`` outputs of images, in the form of ``out_type``.

        Args:
            x (torch.Tensor): (B, C, H, W); another size than ``img_size``
                resizes the position embeddings (and ``'add'`` prompts).
            plan (PromptPlan, optional): Each sample's prompts
                (:meth:`prompt_plan`).

        Returns:
            tuple[torch.Tensor]: One output per ``out_indices`` layer.
        """
        plan = self.prompt_plan(plan)
        B = x.shape[0]
        x, patch_resolution = self.patch_embed(x)
        if self.prompt.location == 'concat-channel':
            x = x + self.prompt.embed_channels(patch_resolution).to(x.dtype)

        if self.cls_token is not None:
            cls_token = self.cls_token.expand(B, -1, -1)
            x = torch.cat((cls_token, x), dim=1)

        x = x + resize_pos_embed(
            self.pos_embed,
            self.patch_resolution,
            patch_resolution,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)
        x = self.drop_after_pos(x)
        x = self.pre_norm(x)

        return self._run_layers(x, plan, patch_resolution,
                                getattr(self, 'ln1', None))
