"""The official VPT learning-rate schedule: linear warm-up from 0, then
cosine decay to 0, stepped once per epoch.

The official trainer reads the lr at the start of each epoch and steps its
``WarmupCosineSchedule`` once at the end, so epoch ``e`` (0-based) trains at
``base_lr * f(e)`` throughout, with::

    f(e) = e / warmup                                      if e < warmup
    f(e) = 0.5 * (1 + cos(pi * (e - warmup) / (total - warmup)))  otherwise

Epoch 0 trains at lr 0, epoch 1 at 1/warmup of the peak, and so on.
"""
from __future__ import annotations

import math

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import _ParamScheduler
from mmengine.registry import PARAM_SCHEDULERS

from .validation import require_int


def warmup_cosine_factor(epoch: int, warmup: int, total: int) -> float:
    """``f(epoch)`` of the official schedule (see the module docstring)."""
    if epoch < warmup:
        return epoch / max(1, warmup)
    progress = (epoch - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


class WarmupCosineParamScheduler(_ParamScheduler):
    """The official schedule of any optimizer parameter, per epoch.

    Args:
        optimizer: Wrapped optimizer.
        param_name (str): The parameter scheduled, e.g. ``'lr'``.
        warmup (int): Warm-up epochs (10 for VPT and Linear, 5 for Full).
        total (int): Total epochs (100).
        by_epoch (bool): Must be True: the official schedule steps per
            epoch. Defaults to True.
        **kwargs: ``begin``, ``end``, ``last_step``, ``verbose`` of
            mmengine's schedulers.
    """

    def __init__(self,
                 optimizer,
                 param_name: str,
                 warmup: int,
                 total: int,
                 by_epoch: bool = True,
                 **kwargs) -> None:
        self.warmup = require_int('warmup', warmup, minimum=0)
        self.total = require_int('total', total, minimum=1)
        if not by_epoch:
            raise ValueError('The official warm-up cosine schedule steps once '
                             'per epoch: by_epoch must be True (do not '
                             'convert it to iterations)')
        if self.warmup >= self.total:
            raise ValueError(f'warmup ({warmup}) must be below total '
                             f'({total})')
        kwargs.setdefault('end', self.total)
        super().__init__(optimizer, param_name, by_epoch=True, **kwargs)

    def _get_value(self) -> list:
        factor = warmup_cosine_factor(self.last_step, self.warmup, self.total)
        return [base * factor for base in self.base_values]


@PARAM_SCHEDULERS.register_module()
class VPTWarmupCosineLR(LRSchedulerMixin, WarmupCosineParamScheduler):
    """The official VPT lr schedule (``WarmupCosineSchedule`` stepped per
    epoch): ``dict(type='VPTWarmupCosineLR', warmup=10, total=100)``."""
