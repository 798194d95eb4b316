"""Prompted backbones: each subclasses an mmpretrain backbone."""
from .convnets import PromptedConvNeXt, PromptedResNet
from .frozen import FrozenBackboneMixin, FrozenViT
from .swin import PromptedSwin
from .vit import PromptedViT

__all__ = [
    'FrozenBackboneMixin', 'FrozenViT', 'PromptedConvNeXt', 'PromptedResNet',
    'PromptedSwin', 'PromptedViT'
]
