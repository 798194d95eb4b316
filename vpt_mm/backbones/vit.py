"""PromptedViT: mmpretrain's VisionTransformer with visual prompts.

Visual Prompt Tuning (Jia et al., ECCV 2022, arXiv 2203.12119).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed

from ..prompts import VisualPrompt
from ..prompts.fused import (
    KV,
    check_fusable,
    checkpointed,
    fused_layer_forward,
    masked_layer_forward,
    prompt_kv,
)
from ..prompts.plan import PromptPlan, TaskPrompts
from ..registry import register_model
from ..validation import require_bool
from .frozen import FrozenBackboneMixin


@register_model()
class PromptedViT(FrozenBackboneMixin, VisionTransformer):
    r"""Vision Transformer with learnable visual prompts, backbone frozen.

    The sequence is ``[CLS, prompts, patches]``: prompts enter after the
    position embedding, as :class:`vpt_mm.prompts.VisualPrompt` makes them
    and the :class:`~vpt_mm.prompts.plan.PromptPlan` of the forward says.
    Layers whose prompts are replaced at their input and never read run in
    the exact fused form (:attr:`fused_layers`); every non-prompt parameter
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

    OUT_TYPES = {
        'raw', 'cls_token', 'featmap', 'avg_featmap', 'avg_prompt', 'avg_all'
    }
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
        if out_type in ('avg_prompt', 'avg_all'):
            if not self.prompt.has_prompt_tokens:
                raise ValueError(
                    f'out_type {out_type!r} pools prompt tokens, but prompt '
                    f'location {self.prompt.location!r} adds none')
            if min(self.out_indices) < self.prompt.layer_ids[0]:
                raise ValueError(
                    f'out_type {out_type!r}: out_indices {self.out_indices} '
                    'include layers before the prompts enter (layer '
                    f'{self.prompt.layer_ids[0] + 1})')
        if (self.prompt.location == 'concat-channel'
                and self.patch_embed.norm is not None):
            raise ValueError("prompt location 'concat-channel' needs a patch "
                             'embedding without norm')
        self.with_cp = require_bool('with_cp', with_cp)
        self.fuse(require_bool('fuse_prompts', fuse_prompts))
        self.init_frozen_backbone(freeze_backbone, trainable)

    def fuse(self, enabled: bool = True) -> None:
        """Switch between the fused and the token form of the prompts.

        Both forms compute the same function with the same parameters, so
        the switch can be made at any time, in either direction, any number
        of times (calling it twice is the same as once).

        Args:
            enabled (bool): Fused form where exact (True) or the token form
                everywhere (False). Defaults to True.
        """
        fused = self._fused_layers(enabled)
        for i in fused:
            check_fusable(self.layers[i])
        self.fuse_prompts = bool(enabled)
        self.fused_layers = fused

    def _fused_layers(self, enabled: bool) -> Tuple[int, ...]:
        """The layers that run fused with ``fuse_prompts=enabled``."""
        if self.prompt.location == 'prefix':
            # Learnt keys/values have no token form: always "fused".
            return tuple(self.prompt.layer_ids)
        return self._fusable_layers() if enabled else ()

    def _fusable_layers(self) -> Tuple[int, ...]:
        """Layers whose prompts are replaced at the input and whose prompt
        outputs are never read."""
        if not self.prompt.has_prompt_tokens:
            return ()
        ids = self.prompt.layer_ids
        reads_prompts = self.out_type in ('raw', 'avg_prompt', 'avg_all')
        fused = []
        for i in ids:
            flows_on = i == ids[-1] and i < self.num_layers - 1
            if flows_on or (reads_prompts and i in self.out_indices):
                continue
            fused.append(i)
        return tuple(fused)

    def task_prompts(self, fuse: Optional[bool] = None) -> TaskPrompts:
        """This model's prompts as one task of a :class:`PromptPlan`.

        Args:
            fuse (bool, optional): Fused form where exact (True) or the
                token form (False); by default as :meth:`fuse` set it.
        """
        return TaskPrompts({i: (self.prompt, i)
                            for i in self.prompt.layer_ids},
                           self._fused_for(fuse), self.prompt.num_tokens)

    def _prompt_kv(self, i: int, x: torch.Tensor
                   ) -> Callable[[VisualPrompt, int, int], KV]:
        """How layer ``i`` makes one prompt module's keys/values (learnt,
        for VPT-prefix), computed at every forward: once for the batch, or
        per sample under per-sample prompt dropout."""
        layer = self.layers[i]

        def kv_of(prompt: VisualPrompt, local: int, batch_size: int) -> KV:
            if prompt.location == 'prefix':
                k, v = prompt.prefix_kv(local, layer.attn.num_heads,
                                        batch_size)
                return k.to(x.dtype), v.to(x.dtype)
            prompts = prompt.layer_prompts(local, batch_size,
                                           self._embed_pixels)
            return prompt_kv(layer, prompts.to(x.dtype))

        return kv_of

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

        outs = []
        n = self.num_extra_tokens
        for i, layer in enumerate(self.layers):
            if plan.is_fused(i):
                x = plan.strip(x, n, patch_resolution)
                kv, keep = plan.kv(i, self._prompt_kv(i, x), B)
                if keep is not None:  # padding: prompts first, then x
                    keep = F.pad(keep, (0, x.shape[1]), value=True)
                x = checkpointed(self.with_cp, fused_layer_forward, layer,
                                 x, kv, keep)
            else:
                x = plan.insert(
                    x, i, n, hw=patch_resolution, embed=self._embed_pixels)
                keep = plan.key_mask()
                if keep is None:
                    x = checkpointed(self.with_cp, layer, x)
                else:
                    # [extra tokens, prompts, patches]: only prompts masked
                    keep = F.pad(keep, (n, x.shape[1] - n - keep.shape[1]),
                                 value=True)
                    x = checkpointed(self.with_cp, masked_layer_forward,
                                     layer, x, keep)

            if i == len(self.layers) - 1 and self.final_norm:
                x = self.ln1(x)

            if i in self.out_indices:
                outs.append(self._format_output(x, patch_resolution, plan))

        return tuple(outs)

    def _format_output(self, x: torch.Tensor, hw: Sequence[int],
                       plan: PromptPlan) -> torch.Tensor:
        """One ``out_indices`` output of the layer output ``x``."""
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        _, prompts, patches = self.prompt.split(x, self.num_extra_tokens,
                                                hw[0] * hw[1])
        if self.out_type == 'featmap':
            B = x.size(0)
            return patches.reshape(B, *hw, -1).permute(0, 3, 1, 2)
        if self.out_type == 'avg_featmap':
            return patches.mean(dim=1)
        if self.out_type == 'avg_prompt':
            return plan.mean(prompts)
        # 'avg_all'
        if plan.key_mask() is None:
            return x[:, self.num_extra_tokens:].mean(dim=1)
        return plan.mean(prompts, patches)
