"""Mixed precision on CPU through mmengine's ``AmpOptimWrapper``.

mmengine's ``AmpOptimWrapper`` refuses to start without a GPU, although its
autocast context supports bfloat16 on CPU. :class:`CPUAmpOptimWrapper` is
that wrapper with the device check relaxed to bfloat16 on CPU and no loss
scaling (bfloat16 has float32's exponent range). Parameters stay float32
master weights in both: autocast only changes the dtype of the operations.
"""
from __future__ import annotations

from typing import Union

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(AmpOptimWrapper):
    """``AmpOptimWrapper`` for CPU training in bfloat16.

    Args:
        dtype (str | torch.dtype): Must be bfloat16 (CPU autocast supports
            no other). Defaults to ``'bfloat16'``.
        loss_scale (str | float | dict): Ignored with bfloat16 (no scaling
            is needed); accepted so that configs written for CUDA work.
        **kwargs: Arguments of mmengine's ``OptimWrapper``.
    """

    def __init__(self,
                 dtype: Union[str, torch.dtype] = 'bfloat16',
                 loss_scale: Union[str, float, dict] = 'dynamic',
                 **kwargs) -> None:
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ValueError(f'CPU mixed precision supports bfloat16 only, '
                             f'got {dtype!r} (float16 autocast needs CUDA)')
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)
        self.cast_dtype = torch.bfloat16
