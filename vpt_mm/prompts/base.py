"""The common base of every prompt module."""
from __future__ import annotations

import torch.nn as nn


class AddedModule(nn.Module):
    """A module added to a pretrained backbone (prompts, adapters).

    Its parameters are never in pretrained checkpoints (strict loading lets
    them be missing), are not counted as backbone parameters, and always
    belong to what a task tunes. ``group`` names them in parameter
    counts.
    """

    group = 'added'


def _parameter_names(model: nn.Module, kind: type) -> set:
    names = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, kind):
            prefix = f'{mod_name}.' if mod_name else ''
            names.update(prefix + n for n, _ in module.named_parameters())
    return names


def added_parameter_names(model: nn.Module) -> set:
    """Names of every parameter that belongs to an :class:`AddedModule`."""
    return _parameter_names(model, AddedModule)


class PromptModule(AddedModule):
    """Base class of the learnable prompts of a prompted backbone.

    Everything in the package that needs to tell prompts from the frozen
    backbone (freezing, train/eval modes, strict pretrained loading, the
    prompt-only checkpoints) recognises prompts as instances of this class,
    wherever they sit in the module tree.

    Subclasses set ``num_tokens`` (the prompt length p), ``location``
    and ``embed_dims`` (the width the prompts live in).
    """

    group = 'prompt'
    num_tokens: int
    location: str
    embed_dims: int


def prompt_parameter_names(model: nn.Module) -> set:
    """Names of every parameter that belongs to a :class:`PromptModule`."""
    return _parameter_names(model, PromptModule)
