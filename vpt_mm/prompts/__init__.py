"""Prompt components shared by every prompted backbone (plain torch)."""
from .base import (
    AddedModule,
    PromptModule,
    added_parameter_names,
    prompt_parameter_names,
)
from .config import (
    DEFAULT_DROPOUT,
    INITS,
    LOCATIONS,
    PIXEL_LOCATIONS,
    SHARES,
    PromptConfig,
    load_cls_init,
)
from .padding import PaddingPrompt
from .prompt import VisualPrompt, resize_grid
from .prototypes import class_prototypes, collect_features

__all__ = [
    'AddedModule', 'DEFAULT_DROPOUT', 'INITS', 'LOCATIONS',
    'PIXEL_LOCATIONS', 'SHARES', 'PaddingPrompt', 'PromptConfig',
    'PromptModule', 'VisualPrompt', 'added_parameter_names',
    'class_prototypes', 'collect_features', 'load_cls_init',
    'prompt_parameter_names', 'resize_grid'
]
