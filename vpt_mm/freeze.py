"""Freezing: which parameters train, and which modules are in train mode.

The one home of both rules, below the backbones and the tuning protocols,
which both use it:

- :func:`set_trainable`: a pretrained parameter trains iff its name matches
  one of the given patterns; an added module's (prompts, adapters) trains
  unless the module is frozen.
- :func:`set_frozen_modes`: after ``model.train(mode)``, a module is in
  train mode iff ``mode`` and some pretrained parameter in its subtree
  trains; a module holding no parameters (dropout, drop-path) takes its
  parent's mode; a BatchNorm whose weight is frozen stays in eval mode (its
  statistics belong to the frozen function); added modules follow ``mode``.
  So a frozen block is a fixed function (no dropout, no statistics
  updates), and a block that learns (Partial, Bias, VPT + Bias, Full)
  behaves as in fine-tuning.
"""
from __future__ import annotations

import re
from typing import Dict, Sequence, Tuple

import torch.nn as nn
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm

from .prompts import AddedModule


def set_trainable(module: nn.Module, patterns: Sequence[str] = ()) -> None:
    """Decide ``requires_grad`` of every parameter of a backbone.

    Parameters of added modules (prompts, adapters) train unless the module
    is frozen (``prompt_cfg.frozen``); a pretrained parameter trains iff its
    name matches one of ``patterns`` (``re.search``).

    Args:
        module (nn.Module): The backbone.
        patterns (Sequence[str]): Regular expressions of the pretrained
            parameters that train.

    Raises:
        ValueError: If a pattern matches no pretrained parameter.
    """
    added = {}
    for mod_name, sub in module.named_modules():
        if isinstance(sub, AddedModule):
            prefix = f'{mod_name}.' if mod_name else ''
            frozen = bool(getattr(getattr(sub, 'cfg', None), 'frozen', False))
            for name, _ in sub.named_parameters():
                added[prefix + name] = not frozen
    names = [n for n, _ in module.named_parameters() if n not in added]
    for pattern in patterns:
        if not any(re.search(pattern, n) for n in names):
            raise ValueError(f'trainable pattern {pattern!r} matches no '
                             f'parameter of {type(module).__name__}')
    for name, param in module.named_parameters():
        if name in added:
            param.requires_grad = added[name]
        else:
            param.requires_grad = any(re.search(p, name) for p in patterns)


def _learning(module: nn.Module,
              memo: Dict[int, Tuple[bool, bool]]) -> Tuple[bool, bool]:
    """(holds pretrained parameters, one of them trains) for the subtree of
    ``module``, added modules left out."""
    key = id(module)
    if key not in memo:
        holds = trains = False
        for param in module.parameters(recurse=False):
            holds = True
            trains = trains or param.requires_grad
        for child in module.children():
            if isinstance(child, AddedModule):
                continue
            h, t = _learning(child, memo)
            holds, trains = holds or h, trains or t
        memo[key] = holds, trains
    return memo[key]


def set_frozen_modes(module: nn.Module) -> None:
    """Put the frozen parts of ``module`` in eval mode after
    ``module.train(mode)`` (the rule is in the module docstring).

    ``module`` itself keeps the mode it was given.

    Args:
        module (nn.Module): A backbone (or any model) with frozen parts.

    Examples:
        >>> layer = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
        >>> layer[0].weight.requires_grad = False
        >>> set_frozen_modes(layer.train())
        >>> layer[1].training, layer[0].bias.requires_grad
        (True, True)
        >>> layer[0].bias.requires_grad = False
        >>> set_frozen_modes(layer.train())
        >>> layer[1].training
        False
    """
    mode = module.training
    memo: Dict[int, Tuple[bool, bool]] = {}

    def visit(sub: nn.Module, parent: bool) -> None:
        for child in sub.children():
            if isinstance(child, AddedModule):
                child.train(mode)
                continue
            holds, trains = _learning(child, memo)
            child.training = (mode and trains) if holds else parent
            if isinstance(child, _BatchNorm) and (
                    child.weight is None or not child.weight.requires_grad):
                child.training = False
            visit(child, child.training)

    holds, trains = _learning(module, memo)
    visit(module, mode and trains if holds else mode)
