"""Prompted backbones: each subclasses an mmpretrain backbone, or
:class:`TimmViT` (a timm ViT-family model as an OpenMMLab backbone) for
:class:`PromptedTimmViT`; the plain ViTs share their prompt logic
(:mod:`~vpt_mm.backbones.sequence`)."""
from .convnets import PromptedConvNeXt, PromptedResNet
from .frozen import FrozenBackboneMixin, FrozenViT
from .swin import PromptedSwin
from .timm_vit import PromptedTimmViT, TimmViT
from .vit import PromptedViT

__all__ = [
    'FrozenBackboneMixin', 'FrozenViT', 'PromptedConvNeXt', 'PromptedResNet',
    'PromptedSwin', 'PromptedTimmViT', 'PromptedViT', 'TimmViT'
]
