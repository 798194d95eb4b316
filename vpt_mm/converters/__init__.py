"""Converters from original checkpoint layouts to mmpretrain backbone keys.

The command-line wrappers live in ``tools/model_converters/``.
"""
from .common import load_source_checkpoint, save_backbone_checkpoint
from .timm_vit import convert_timm_vit

__all__ = [
    'convert_timm_vit', 'load_source_checkpoint', 'save_backbone_checkpoint'
]
