"""Prompt components shared by every prompted backbone (plain torch)."""
from .config import (
    DEFAULT_DROPOUT,
    INITS,
    LOCATIONS,
    PIXEL_LOCATIONS,
    SHARES,
    PromptConfig,
    load_cls_init,
)
from .prompt import PROMPT_PREFIX, VisualPrompt, resize_grid
from .prototypes import class_prototypes, collect_features

__all__ = [
    'DEFAULT_DROPOUT', 'INITS', 'LOCATIONS', 'PIXEL_LOCATIONS', 'SHARES',
    'PROMPT_PREFIX', 'PromptConfig', 'VisualPrompt', 'class_prototypes',
    'collect_features', 'load_cls_init', 'resize_grid'
]
