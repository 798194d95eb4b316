"""vpt_mm: Visual Prompt Tuning as an OpenMMLab extension package.

Importing the package registers its models into mmpretrain's and
mmsegmentation's registries, and its datasets and hooks into mmpretrain's.
Configs load it with
``custom_imports=dict(imports=['vpt_mm'], allow_failed_imports=False)``.
"""
from . import compat

compat.apply_all()

from . import amp, backbones, datasets, hooks, tuning  # noqa: E402,F401
from .checkpoints import load_tuned, save_tuned  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = [
    '__version__', 'amp', 'backbones', 'datasets', 'hooks', 'load_tuned',
    'save_tuned'
]
