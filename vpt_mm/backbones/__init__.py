"""Prompted backbones: each subclasses an mmpretrain backbone, except
:class:`PromptedTimmViT`, which holds a timm model; the plain ViTs share
their prompt logic (:mod:`~vpt_mm.backbones.sequence`)."""
from .convnets import PromptedConvNeXt, PromptedResNet
from .frozen import FrozenBackboneMixin, FrozenViT
from .swin import PromptedSwin
from .timm_vit import PromptedTimmViT
from .vit import PromptedViT

__all__ = [
    'FrozenBackboneMixin', 'FrozenViT', 'PromptedConvNeXt', 'PromptedResNet',
    'PromptedSwin', 'PromptedTimmViT', 'PromptedViT'
]
