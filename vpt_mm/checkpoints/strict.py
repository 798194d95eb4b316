"""Strict key checking: every key present, none extra, same shapes."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn


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


def _check_key_sets(missing: list, unexpected: list, what: str,
                    hint: str) -> None:
    """Raise a ValueError naming the first missing (else unexpected) key."""
    if missing or unexpected:
        first = (missing or unexpected)[0]
        kind = 'missing from' if missing else 'unexpected in'
        raise ValueError(
            f'{what}: key {first!r} is {kind} the checkpoint ({len(missing)} '
            f'missing, {len(unexpected)} unexpected keys in all; {hint})')


#: What a checkpoint that does not fit its model probably is.
NOT_THIS_CONFIG = ('is it a checkpoint of this config (prompt length, depth, '
                   'protocol, number of classes)?')


def _check_fits(expected: Dict[str, torch.Tensor],
                state: Dict[str, torch.Tensor], what: str) -> None:
    """Raise a ValueError unless ``state`` has exactly the keys of
    ``expected``, with the same shapes; it names the first bad key."""
    _check_key_sets([k for k in expected if k not in state],
                    [k for k in state if k not in expected], what,
                    NOT_THIS_CONFIG)
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f'{what}: {key!r} has shape {tuple(value.shape)} in the '
                f'checkpoint, {tuple(expected[key].shape)} in the model; '
                f'{NOT_THIS_CONFIG}')


def _named_tensors(model: nn.Module, keys) -> Dict[str, torch.Tensor]:
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    return {k: tensors[k] for k in keys}
