"""Parameter accounting: backbone size, tuned parameters and their share.

The share is relative to the backbone without its prompts (ViT-B/16 at 224:
85,798,656 parameters) and printed truncated to two decimals, the paper's
convention: VPT-Deep p=50 tunes 460,800 prompt parameters = 0.537% -> 0.53%,
VPT-Shallow 38,400 = 0.0448% -> 0.04%.
"""
from __future__ import annotations

import copy
import io
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, Tuple

import torch
import torch.nn as nn

from ..prompts import AddedModule


@dataclass
class ParamCount:
    """Parameter counts of a model.

    Attributes:
        backbone (int): Backbone parameters, prompts and other added
            modules (adapters) excluded.
        tuned (dict[str, int]): Trainable parameters per group: ``prompt``,
            ``adapter`` (added modules, by their ``group``), ``backbone``
            (pretrained backbone parameters left trainable),
            and one entry per other top-level module (e.g. ``head``).
    """

    backbone: int
    tuned: Dict[str, int] = field(default_factory=dict)

    @property
    def total_tuned(self) -> int:
        """All trainable parameters."""
        return sum(self.tuned.values())

    def percent(self, group: str = None) -> float:
        """Trainable parameters (of one group) as % of the backbone."""
        count = self.total_tuned if group is None else self.tuned.get(
            group, 0)
        return 100.0 * count / self.backbone


def count_parameters(model: nn.Module) -> ParamCount:
    """Count backbone and tuned parameters of a model.

    Args:
        model (nn.Module): A model with a ``backbone`` attribute (mmpretrain
            ``ImageClassifier``, mmseg ``EncoderDecoder``) or a backbone.

    Returns:
        ParamCount: The counts.
    """
    backbone = getattr(model, 'backbone', model)
    groups = {}
    for module in backbone.modules():
        if isinstance(module, AddedModule):
            for param in module.parameters():
                groups.setdefault(id(param), module.group)
    count = ParamCount(backbone=0)
    backbone_ids = set()
    for name, param in backbone.named_parameters():
        backbone_ids.add(id(param))
        if id(param) not in groups:
            count.backbone += param.numel()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in groups:
            group = groups[id(param)]
        elif id(param) in backbone_ids:
            group = 'backbone'
        else:
            group = name.split('.')[0]
        count.tuned[group] = count.tuned.get(group, 0) + param.numel()
    return count


def truncate_decimals(value: float, digits: int = 2) -> str:
    """``value`` truncated (not rounded) to ``digits`` decimals, the paper's
    convention for percentages: 0.537 -> '0.53'."""
    scale = 10**digits
    return f'{math.floor(value * scale) / scale:.{digits}f}'


def format_param_count(count: ParamCount) -> str:
    """A small text table of a :class:`ParamCount`."""
    rows = [('backbone (frozen + tuned, no prompts)', count.backbone, '')]
    for group, num in sorted(count.tuned.items()):
        rows.append((f'tuned: {group}', num,
                     f'{truncate_decimals(count.percent(group))}%'))
    rows.append(('tuned: total', count.total_tuned,
                 f'{truncate_decimals(count.percent())}%'))
    width = max(len(r[0]) for r in rows)
    lines = [f'{"parameters":<{width}}  {"count":>13}  {"% backbone":>10}']
    lines += [f'{a:<{width}}  {b:>13,}  {c:>10}' for a, b, c in rows]
    return '\n'.join(lines)


def model_for_accounting(cfg) -> nn.Module:
    """The model of a resolved config, built without its pretrained
    checkpoint (counts and sizes do not depend on the weights).

    Args:
        cfg (Config): A resolved config (:func:`vpt_mm.config.resolve_config`).

    Returns:
        nn.Module: The model, randomly initialised.
    """
    from mmengine.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.pop('init_cfg', None)
    return MODELS.build(model_cfg)


def checkpoint_sizes(model: nn.Module, optim_wrapper: dict) -> Tuple[int, int]:
    """Bytes of a training checkpoint's weights and optimizer state, as
    :class:`~vpt_mm.hooks.VPTCheckpointHook` saves them (without the frozen
    backbone) and with the whole model.

    The optimizer is built from ``optim_wrapper`` (a config's) and takes one
    step with zero gradients, so its state (momentum, Adam moments) exists.

    Args:
        model (nn.Module): The model, built from the config.
        optim_wrapper (dict): The config's ``optim_wrapper``.

    Returns:
        tuple: (small, whole) in bytes, as ``torch.save`` writes them.
    """
    from mmengine.optim import build_optim_wrapper

    from ..checkpoints import omit_frozen
    from ..optim import runner_optim_wrapper_cfg
    wrapper = build_optim_wrapper(model,
                                  runner_optim_wrapper_cfg(optim_wrapper))
    for param in model.parameters():
        if param.requires_grad:
            param.grad = torch.zeros_like(param)
    wrapper.step()
    wrapper.zero_grad()
    state = model.state_dict()
    small = omit_frozen(model, state)
    sizes = []
    for weights in (state if small is None else small, state):
        buffer = io.BytesIO()
        torch.save(dict(state_dict=weights, optimizer=wrapper.state_dict()),
                   buffer)
        sizes.append(buffer.tell())
    return sizes[0], sizes[1]


@contextmanager
def saved_activations(model: nn.Module) -> Iterator[Dict[int, int]]:
    """Record what autograd saves for the backward pass of the forward run
    inside the ``with`` block: a dict, storage address -> bytes.

    Each storage counts once (views share it); the model's parameters and
    buffers (e.g. a frozen weight saved, transposed, for an input
    gradient) are left out, as they are held anyway. With activation
    checkpointing (``with_cp``) only what the checkpoints keep is seen,
    their inputs. Exact and independent of the allocator, unlike peak
    memory.

    Args:
        model (nn.Module): The model whose tensors to leave out.

    Examples:
        A frozen first layer: nothing below the last Linear needs a
        gradient, so autograd keeps only that layer's input.

        >>> model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 1))
        >>> model[0].requires_grad_(False)  # doctest: +ELLIPSIS
        Linear(...)
        >>> x = torch.rand(16, 4)
        >>> with saved_activations(model) as saved:
        ...     loss = model(x).sum()
        >>> sum(saved.values())  # 16 x 8 floats: the last Linear's input
        512
    """
    held = {t.untyped_storage().data_ptr()
            for t in list(model.parameters()) + list(model.buffers())}
    saved: Dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in held:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield saved
