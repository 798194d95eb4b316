"""PromptedConvNeXt and PromptedResNet: pixel prompts padded around the
image of a frozen mmpretrain ConvNet.

Visual Prompt Tuning (Jia et al., ECCV 2022, arXiv 2203.12119), "VPT for
ConvNets": the prompts are a learnable frame of width p around the input.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from mmpretrain.models.backbones import ConvNeXt, ResNet

from ..prompts import PaddingPrompt
from ..prompts.plan import PromptPlan, TaskPrompts
from ..registry import register_model
from .frozen import FrozenBackboneMixin


class PaddingPromptMixin(FrozenBackboneMixin):
    """Frame the input with a :class:`~vpt_mm.prompts.PaddingPrompt`, then
    run the parent ConvNet unchanged.

    Frozen-backbone contract: every parameter outside ``prompt.`` is frozen
    and every backbone module, BatchNorm included, stays in eval mode after
    ``train()``, so normalisation statistics never change.
    """

    OWN_ARGS = FrozenBackboneMixin.OWN_ARGS + ('img_size', 'frame')

    def __init__(self,
                 *args,
                 img_size: Union[int, Sequence[int]] = 224,
                 in_channels: int = 3,
                 prompt_cfg: Optional[dict] = None,
                 freeze_backbone: bool = True,
                 trainable: Sequence[str] = (),
                 frame: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(*args, in_channels=in_channels, **kwargs)
        self.prompt = PaddingPrompt(
            prompt_cfg or {}, img_size=img_size, in_channels=in_channels,
            **(frame or {}))
        self.init_frozen_backbone(freeze_backbone, trainable)

    def task_prompts(self, fuse: Optional[bool] = None) -> TaskPrompts:
        """This model's frame as one task of a :class:`PromptPlan` (the
        prompt of layer 0, the input; ``fuse`` does not apply)."""
        return TaskPrompts({0: (self.prompt, 0)},
                           num_tokens=self.prompt.num_tokens)

    def forward(self, x: torch.Tensor,
                plan: Optional[PromptPlan] = None) -> Tuple[torch.Tensor, ...]:
        """Forward images (B, C, H, W); the network sees (H+2p, W+2p).

        Args:
            x (torch.Tensor): Images.
            plan (PromptPlan, optional): Each sample's frame; by default
                this model's own. :meth:`PromptPlan.empty` runs the frozen
                ConvNet on the image alone.
        """
        return super().forward(self.prompt_plan(plan).frame(x))


@register_model()
class PromptedConvNeXt(PaddingPromptMixin, ConvNeXt):
    r"""ConvNeXt with a learnable pixel frame around the input, frozen.

    The outputs are mmpretrain ConvNeXt's: with the default
    ``gap_before_final_norm=True`` the pooled, normalised final features for
    classification; with ``gap_before_final_norm=False`` and ``out_indices``
    the normalised stage feature maps for segmentation.

    Args:
        arch (str | dict): mmpretrain ConvNeXt arch. Defaults to ``'base'``.
        img_size (int | tuple): Input size the frame is made for (it is
            resized along its length for other sizes). Defaults to 224.
        in_channels (int): Defaults to 3.
        prompt_cfg (dict): ``num_tokens`` (the frame width p, in pixels),
            ``dropout``, ``dropout_mode`` and ``frozen``; see
            :class:`vpt_mm.prompts.PaddingPrompt`. Defaults to p = 1.
        freeze_backbone (bool): Defaults to True.
        trainable (Sequence[str]): Regular expressions of backbone parameter
            names that also train, e.g. ``[r'(^|\.)bias$']``.
            Defaults to ().
        frame (dict, optional): ``space``, ``mean``, ``std`` of
            :class:`~vpt_mm.prompts.PaddingPrompt` (default: the official
            pixel-space frame, ImageNet mean/std).
        **kwargs: Other arguments of mmpretrain's ``ConvNeXt``.
    """

    UPSTREAM = ConvNeXt

    def __init__(self, arch: Union[str, dict] = 'base', **kwargs) -> None:
        super().__init__(arch=arch, **kwargs)


@register_model()
class PromptedResNet(PaddingPromptMixin, ResNet):
    r"""ResNet with a learnable pixel frame around the input, frozen.

    The outputs are mmpretrain ResNet's ``out_indices`` feature maps (a
    ``GlobalAveragePooling`` neck makes the classification features).

    Args:
        depth (int): 18, 34, 50, 101 or 152. Defaults to 50.
        img_size (int | tuple): Input size the frame is made for.
            Defaults to 224.
        in_channels (int): Defaults to 3.
        prompt_cfg (dict): As for :class:`PromptedConvNeXt`.
        freeze_backbone (bool): Defaults to True.
        trainable (Sequence[str]): Regular expressions of backbone parameter
            names that also train, e.g. ``[r'(^|\.)bias$']``.
            Defaults to ().
        frame (dict, optional): As for :class:`PromptedConvNeXt`.
        **kwargs: Other arguments of mmpretrain's ``ResNet``.
    """

    UPSTREAM = ResNet

    def __init__(self, depth: int = 50, **kwargs) -> None:
        super().__init__(depth=depth, **kwargs)
