"""Registration of vpt_mm components into the OpenMMLab registries.

Models are registered into both mmpretrain's and mmsegmentation's ``MODELS``
(reachable as ``mmpretrain.PromptedViT`` and ``mmseg.PromptedViT`` from any
scope); datasets, hooks and transforms into mmpretrain's. The runner and the
hooks every config needs (checkpoints, divergence) are registered into
mmengine's root registries (``ENGINE_HOOKS``, ``RUNNERS``), which every scope
falls back to.
"""
from __future__ import annotations

from typing import Callable

from mmengine.registry import HOOKS as ENGINE_HOOKS
from mmengine.registry import RUNNERS
from mmpretrain.registry import (  # noqa: F401
    DATASETS,
    HOOKS,
    METRICS,
    TRANSFORMS,
)
from mmpretrain.registry import MODELS as PRETRAIN_MODELS
from mmseg.registry import MODELS as SEG_MODELS

__all__ = [
    'DATASETS', 'ENGINE_HOOKS', 'HOOKS', 'PRETRAIN_MODELS', 'RUNNERS',
    'SEG_MODELS', 'register_model'
]


def register_model() -> Callable[[type], type]:
    """Class decorator registering a model into mmpretrain and mmseg."""

    def _register(cls: type) -> type:
        PRETRAIN_MODELS.register_module(module=cls)
        SEG_MODELS.register_module(module=cls)
        return cls

    return _register
