"""vpt_mm: Visual Prompt Tuning as an OpenMMLab extension package.

Importing the package registers its models into mmpretrain's and
mmsegmentation's registries, and its datasets and hooks into mmpretrain's.
Configs load it with
``custom_imports=dict(imports=['vpt_mm'], allow_failed_imports=False)``.
"""
from . import compat

compat.apply_all()

from . import (  # noqa: E402,F401
    amp,
    backbones,
    datasets,
    engine,
    hooks,
    optim,
    schedulers,
    segmentation,
    tuning,
)
from .checkpoints import (  # noqa: E402
    load_tuned,
    register_checkpoint_schemes,
    save_tuned,
)
from .version import __version__  # noqa: E402

register_checkpoint_schemes()

__all__ = [
    '__version__', 'amp', 'backbones', 'datasets', 'engine', 'hooks',
    'load_tuned', 'save_tuned'
]
