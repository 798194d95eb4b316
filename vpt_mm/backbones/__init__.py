"""Prompted backbones: each subclasses an mmpretrain backbone."""
from .frozen import FrozenBackboneMixin
from .vit import PromptedViT

__all__ = ['FrozenBackboneMixin', 'PromptedViT']
