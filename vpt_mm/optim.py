"""The optimizer constructor of every vpt_mm run: frozen parameters never
reach the optimizer.

mmengine's ``DefaultOptimWrapperConstructor`` passes every parameter of the
model to the optimizer when there is no ``paramwise_cfg``, and with one it
logs a warning per frozen tensor ("... is skipped since its
requires_grad=False": 148 lines for a SETR run). With a frozen backbone
that is nearly every tensor. :class:`VPTOptimWrapperConstructor` is
mmengine's constructor with the frozen parameters taken out first, and one
log line that says how many.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch.optim import Optimizer

from .amp import amp_wrapper_for_device

__all__ = ['VPTOptimWrapperConstructor', 'runner_optim_wrapper_cfg']


class _SkipFrozenRecords(logging.Filter):
    """Drops mmengine's per-tensor "... is skipped since its
    requires_grad=False" records (the frozen parameters are counted in one
    line instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return 'is skipped since its requires_grad=False' not in \
            record.getMessage()


@contextlib.contextmanager
def _quiet_frozen_skips() -> Iterator[None]:
    """Within the block, mmengine's current logger drops those records."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    quiet = _SkipFrozenRecords()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


class _TrainableParameters:
    """What mmengine's constructor reads of a model when there is no
    ``paramwise_cfg`` (its ``parameters()``), trainable parameters only."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model

    def parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self._model.parameters() if p.requires_grad)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class VPTOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's ``DefaultOptimWrapperConstructor`` over the trainable
    parameters only.

    :class:`~vpt_mm.engine.VPTRunner` uses it for every ``optim_wrapper``
    that names no ``constructor``. ``paramwise_cfg`` (``custom_keys``,
    ``bias_decay_mult``, ...) means what it means in mmengine; the learning
    rates and weight decays of the trainable parameters are the same as with
    mmengine's constructor (frozen parameters get no gradient, so mmengine's
    optimizer never updated them either).
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if hasattr(model, 'module'):
            model = model.module
        frozen = [p for p in model.parameters() if not p.requires_grad]
        if frozen:
            from mmengine.logging import print_log
            print_log(
                f'{len(frozen)} frozen parameter tensors '
                f'({sum(p.numel() for p in frozen):,} parameters) are left '
                'out of the optimizer', logger='current', level=logging.INFO)
        if not self.paramwise_cfg:
            # mmengine passes model.parameters() as the one param group.
            return super().__call__(_TrainableParameters(model))
        # mmengine's add_params skips frozen tensors itself, with a warning
        # per tensor.
        with _quiet_frozen_skips():
            return super().__call__(model)


def runner_optim_wrapper_cfg(optim_wrapper):
    """The ``optim_wrapper`` a vpt_mm run builds from a config's: mmengine's
    ``AmpOptimWrapper`` switched to :class:`~vpt_mm.amp.CPUAmpOptimWrapper`
    without a GPU (:func:`~vpt_mm.amp.amp_wrapper_for_device`), and
    :class:`VPTOptimWrapperConstructor` where it names no ``constructor``.
    ``VPTRunner`` and the accounting tools both build through it.

    Args:
        optim_wrapper (dict | OptimWrapper): The config's ``optim_wrapper``
            (anything else than a config dict is returned as it is).

    Returns:
        dict | OptimWrapper: What to give mmengine's ``build_optim_wrapper``.
    """
    optim_wrapper = amp_wrapper_for_device(optim_wrapper)
    if (isinstance(optim_wrapper, dict)
            and optim_wrapper.get('optimizer') is not None
            and 'constructor' not in optim_wrapper
            and not isinstance(optim_wrapper['optimizer'], Optimizer)):
        optim_wrapper = dict(
            optim_wrapper, constructor='VPTOptimWrapperConstructor')
    return optim_wrapper
