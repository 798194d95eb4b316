"""Converters from original checkpoint layouts to mmpretrain backbone keys.

The command-line wrappers live in ``tools/model_converters/``.
"""
from .common import (
    convert_file,
    load_source_checkpoint,
    rename_keys,
    save_backbone_checkpoint,
)
from .convnext import convert_convnext
from .google_vit import convert_google_vit
from .resnet import convert_torchvision_resnet
from .ssl_vit import convert_mae_vit, convert_mocov3_vit
from .standin import standin_backbone_state
from .swin import convert_swin
from .timm_vit import convert_timm_vit

__all__ = [
    'convert_convnext', 'convert_file', 'convert_google_vit',
    'convert_mae_vit', 'convert_mocov3_vit', 'convert_swin',
    'convert_timm_vit', 'convert_torchvision_resnet',
    'load_source_checkpoint', 'rename_keys', 'save_backbone_checkpoint',
    'standin_backbone_state'
]
