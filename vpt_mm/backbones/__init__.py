"""Prompted backbones: each subclasses an mmpretrain backbone."""
from .convnets import PromptedConvNeXt, PromptedResNet
from .frozen import FrozenBackboneMixin
from .swin import PromptedSwin
from .vit import PromptedViT

__all__ = [
    'FrozenBackboneMixin', 'PromptedConvNeXt', 'PromptedResNet',
    'PromptedSwin', 'PromptedViT'
]
