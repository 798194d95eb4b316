"""Pretrained backbones: loaded strictly (only added modules may be
missing)."""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch.nn as nn

from ..integrity import check_finite
from ..prompts import (
    added_parameter_names,
)
from .strict import _check_key_sets, extract_state_dict
from .training import omits_frozen


def load_pretrained_backbone(backbone: nn.Module,
                             filename: str,
                             prefix: Optional[str] = None,
                             map_location: str = 'cpu',
                             convert: Optional[Callable[[Dict], Dict]] = None
                             ) -> None:
    """Load a pretrained checkpoint into a prompted backbone, strictly.

    Prompt parameters (and those of other added modules, e.g. adapters) may
    be missing from the checkpoint (they keep their initialisation); any
    other missing or unexpected key, or a shape that
    does not fit, raises a :class:`ValueError` naming the first bad key.
    The backbone's own ``load_state_dict`` pre-hooks run, so e.g. a ViT
    position embedding of another resolution is resized.

    Args:
        backbone (nn.Module): The backbone to load into.
        filename (str): Path or URL understood by mmengine's
            ``CheckpointLoader``.
        prefix (str, optional): Only keys under this prefix are loaded, with
            the prefix removed, e.g. ``'backbone.'`` for a whole-classifier
            mmpretrain checkpoint. Defaults to None.
        map_location (str): Defaults to ``'cpu'``.
        convert (callable, optional): Maps the checkpoint's keys (after
            ``prefix``) to the backbone's, e.g.
            :meth:`~vpt_mm.backbones.timm_vit.TimmViT.from_checkpoint_layout`.
            Defaults to None.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    checkpoint = CheckpointLoader.load_checkpoint(filename,
                                                  map_location=map_location)
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if isinstance(meta, dict) and (meta.get('vpt_mm_tuned')
                                   or omits_frozen(checkpoint)):
        kind = ('tuned-only file' if meta.get('vpt_mm_tuned') else
                'training checkpoint saved without its frozen backbone')
        raise ValueError(
            f'{filename} is a {kind} (prompts and head), not a pretrained '
            'backbone: point init_cfg at the pretrained checkpoint it was '
            'trained on, and load this file with tools/test.py CONFIG FILE '
            '(or load_from)')
    state = extract_state_dict(checkpoint)
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state = {
            k[len(prefix):]: v
            for k, v in state.items() if k.startswith(prefix)
        }
        if not state:
            raise ValueError(f'No key of checkpoint {filename} starts with '
                             f'the prefix {prefix!r}')
    elif any(k.startswith('backbone.') for k in state):
        raise ValueError(
            f'Checkpoint {filename} holds a whole model (keys start with '
            "'backbone.'); set prefix='backbone.' in the Pretrained init_cfg")
    if convert is not None:
        state = convert(state)
    check_finite(state, f'Pretrained checkpoint {filename}')
    added_keys = added_parameter_names(backbone)
    tuned = sorted(k for k in state if k in added_keys)
    if tuned:
        raise ValueError(
            f'Checkpoint {filename} holds prompt (or adapter) tensors '
            f'({tuned[:3]}): it is a tuned or training checkpoint, not a '
            'pretrained backbone, and would overwrite the prompts. Load it '
            'with load_from / tools/test.py CONFIG FILE, and point init_cfg '
            'at the backbone it was trained on')
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f'Checkpoint {filename} does not fit '
                         f'{type(backbone).__name__}: {err}') from err
    # Relative-position indices (Swin) are rebuilt by the model itself and
    # dropped by its pre-hook when a bias table is resized.
    missing = [
        k for k in missing if k not in added_keys
        and not k.endswith('relative_position_index')
    ]
    # Weights of layers this configuration leaves out (e.g. a ViT's final
    # norm with final_norm=False, as mmseg's SETR uses it).
    unused = []
    if hasattr(backbone, 'unused_pretrained_keys'):
        unused = backbone.unused_pretrained_keys(unexpected)
    unexpected = [k for k in unexpected if k not in unused]
    # Layers a checkpoint of this kind cannot hold (the output norms of a
    # segmentation backbone's stages, from a classification checkpoint).
    fresh = []
    if hasattr(backbone, 'fresh_pretrained_keys'):
        fresh = backbone.fresh_pretrained_keys(missing)
    missing = [k for k in missing if k not in fresh]
    _check_key_sets(
        missing, unexpected,
        f'Checkpoint {filename} does not fit {type(backbone).__name__}',
        'convert the checkpoint with tools/model_converters/ first?')
    from mmengine.logging import print_log
    print_log(
        f'Loaded {len(state) - len(unused)} pretrained tensors into '
        f'{type(backbone).__name__} from {filename}; prompts keep their '
        'initialisation' + (f'; unused (layers switched off): {unused}'
                            if unused else '') +
        (f'; not in the checkpoint, keeping their initialisation (new '
         f'output norms): {fresh}' if fresh else ''), logger='current')


def load_configured_pretrained(backbone: nn.Module) -> bool:
    """Load the checkpoint ``backbone.init_cfg=dict(type='Pretrained',
    checkpoint=..., prefix=...)`` names, strictly
    (:func:`load_pretrained_backbone`), through the backbone's
    ``from_checkpoint_layout`` where it has one (timm's layout for
    :class:`~vpt_mm.backbones.TimmViT`).

    Returns:
        bool: False if ``init_cfg`` names no pretrained checkpoint.
    """
    init_cfg = getattr(backbone, 'init_cfg', None)
    if not (isinstance(init_cfg, dict)
            and init_cfg.get('type') == 'Pretrained'):
        return False
    load_pretrained_backbone(
        backbone, init_cfg['checkpoint'], prefix=init_cfg.get('prefix'),
        convert=getattr(backbone, 'from_checkpoint_layout', None))
    backbone._is_init = True
    return True
