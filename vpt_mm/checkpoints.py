"""Checkpoints: strict pretrained-backbone loading and tuned-only files.

A VPT task is stored as its tuned tensors only (prompts + head, and whatever
else the chosen protocol trains) in a safetensors file; the frozen backbone
comes from its pretrained checkpoint. :func:`save_tuned` writes such a file
and :func:`load_tuned` loads it strictly onto a freshly built model.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import torch
import torch.nn as nn

from .prompts import (
    PromptModule,
    added_parameter_names,
    prompt_parameter_names,
)

TUNED_FORMAT = 'vpt_mm.tuned.v1'

__all__ = [
    'extract_state_dict', 'load_pretrained_backbone', 'tuned_state_dict',
    'save_tuned', 'load_tuned', 'TUNED_FORMAT'
]


def extract_state_dict(checkpoint: dict) -> Dict[str, torch.Tensor]:
    """Return the weights of a checkpoint in any of the common layouts.

    mmengine (``state_dict``), original releases (``model``) and bare state
    dicts are accepted; a ``module.`` prefix (DataParallel) is removed.
    """
    if not isinstance(checkpoint, dict):
        raise ValueError(
            f'A checkpoint must be a dict, got {type(checkpoint).__name__}')
    state = checkpoint
    for key in ('state_dict', 'model'):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            state = checkpoint[key]
            break
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


def load_pretrained_backbone(backbone: nn.Module,
                             filename: str,
                             prefix: Optional[str] = None,
                             map_location: str = 'cpu') -> None:
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
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    state = extract_state_dict(
        CheckpointLoader.load_checkpoint(filename, map_location=map_location))
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
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f'Checkpoint {filename} does not fit '
                         f'{type(backbone).__name__}: {err}') from err
    added_keys = added_parameter_names(backbone)
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
    if missing or unexpected:
        first = (missing or unexpected)[0]
        kind = 'missing from' if missing else 'unexpected in'
        raise ValueError(
            f'Checkpoint {filename} does not fit {type(backbone).__name__}: '
            f'key {first!r} is {kind} the checkpoint ({len(missing)} missing,'
            f' {len(unexpected)} unexpected keys in all; convert the '
            'checkpoint with tools/model_converters/ first?)')
    from mmengine.logging import print_log
    print_log(
        f'Loaded {len(state) - len(unused)} pretrained tensors into '
        f'{type(backbone).__name__} from {filename}; prompts keep their '
        'initialisation' + (f'; unused (layers switched off): {unused}'
                            if unused else ''), logger='current')


def tuned_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The tensors a task needs on top of the frozen backbone.

    Every parameter with ``requires_grad=True`` and every prompt parameter
    (frozen prompts too: a "prompt-fixed" task needs its random prompts),
    plus the persistent buffers (e.g. BatchNorm statistics) of modules that
    own such a parameter.
    """
    prompt_keys = prompt_parameter_names(model)
    state = {}
    for mod_name, module in model.named_modules():
        prefix = f'{mod_name}.' if mod_name else ''
        own = list(module.named_parameters(recurse=False))
        trainable = [(n, p) for n, p in own
                     if p.requires_grad or prefix + n in prompt_keys]
        for name, param in trainable:
            state[prefix + name] = param.detach()
        if trainable:
            for name, buf in module.named_buffers(recurse=False):
                if name not in module._non_persistent_buffers_set:
                    state[prefix + name] = buf.detach()
    return state


def _prompt_meta(model: nn.Module) -> Dict[str, str]:
    meta = {}
    for name, module in model.named_modules():
        if isinstance(module, PromptModule):
            meta[f'{name}.num_tokens'] = str(module.num_tokens)
            meta[f'{name}.embed_dims'] = str(module.embed_dims)
            meta[f'{name}.location'] = module.location
    return meta


def save_tuned(model: nn.Module, filename: str) -> Dict[str, torch.Tensor]:
    """Save only the tuned tensors of ``model`` to a safetensors file.

    Args:
        model (nn.Module): Usually an mmpretrain ``ImageClassifier`` or an
            mmseg ``EncoderDecoder`` with a prompted backbone.
        filename (str): Output path, conventionally ``*.safetensors``.

    Returns:
        dict: The tensors written.
    """
    from safetensors.torch import save_file

    state = {
        k: v.contiguous().cpu()
        for k, v in tuned_state_dict(model).items()
    }
    if not state:
        raise ValueError('The model has no trainable parameter to save')
    meta = dict(format=TUNED_FORMAT, **_prompt_meta(model))
    dirname = os.path.dirname(os.path.abspath(filename))
    os.makedirs(dirname, exist_ok=True)
    tmp = f'{filename}.tmp'
    save_file(state, tmp, metadata=meta)
    os.replace(tmp, filename)
    return state


def load_tuned(model: nn.Module, filename: str) -> None:
    """Load a tuned-only safetensors file strictly onto ``model``.

    The file must hold exactly the model's tuned tensors (see
    :func:`tuned_state_dict`) with the same shapes; a prompt file for another
    prompt length or width is reported as such.

    Args:
        model (nn.Module): A freshly built model with its pretrained
            backbone loaded.
        filename (str): A file written by :func:`save_tuned`.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(filename, framework='pt') as f:
        meta = f.metadata() or {}
    if meta.get('format') != TUNED_FORMAT:
        raise ValueError(f'{filename} is not a vpt_mm tuned-tensor file '
                         f'(format {meta.get("format")!r})')
    model_meta = _prompt_meta(model)
    for key in sorted(set(meta) & set(model_meta)):
        if meta[key] != model_meta[key]:
            name, attr = key.rsplit('.', 1)
            raise ValueError(
                f'{filename} was saved for {attr}={meta[key]} at {name!r}, '
                f'but the model has {attr}={model_meta[key]}')
    state = load_file(filename)
    expected = tuned_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f'{filename} does not fit the model: missing {missing[:5]}, '
            f'unexpected {unexpected[:5]}')
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f'{filename}: {key!r} has shape {tuple(value.shape)}, the '
                f'model expects {tuple(expected[key].shape)}')
    with torch.no_grad():
        for key, tensor in _named_tensors(model, expected).items():
            tensor.copy_(state[key])


def _named_tensors(model: nn.Module, keys) -> Dict[str, torch.Tensor]:
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    return {k: tensors[k] for k in keys}
