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

__all__ = [
    'DEFAULT_DROPOUT', 'INITS', 'LOCATIONS', 'PIXEL_LOCATIONS', 'SHARES',
    'PROMPT_PREFIX', 'PromptConfig', 'VisualPrompt', 'load_cls_init',
    'resize_grid'
]
