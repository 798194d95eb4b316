"""Mixed precision on CPU through mmengine's ``AmpOptimWrapper``.

mmengine's ``AmpOptimWrapper`` refuses to start without a GPU, although its
autocast context supports bfloat16 on CPU. :class:`CPUAmpOptimWrapper` is
that wrapper with the device check relaxed to bfloat16 on CPU and no loss
scaling (bfloat16 has float32's exponent range). Parameters stay float32
master weights in both: autocast only changes the dtype of the operations.
"""
from __future__ import annotations

import logging
from typing import Optional, Union

import torch
from mmengine.config import Config
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


def enable_amp(cfg: Config, dtype: Optional[str] = None) -> None:
    """Switch the optimizer wrapper to mixed precision.

    On CUDA this is mmengine's ``AmpOptimWrapper`` (float16 by default,
    ``dtype='bfloat16'`` possible); without a GPU it is
    :class:`~vpt_mm.amp.CPUAmpOptimWrapper` (bfloat16 only). Parameters stay
    float32 in both.

    Args:
        cfg (Config): The config, changed in place.
        dtype (str, optional): ``'float16'`` or ``'bfloat16'``.
    """
    wrapper = cfg.optim_wrapper
    if wrapper.get('type', 'OptimWrapper') in ('AmpOptimWrapper',
                                               'CPUAmpOptimWrapper'):
        return
    if torch.cuda.is_available():
        wrapper.type = 'AmpOptimWrapper'
        wrapper.setdefault('loss_scale', 'dynamic')
    else:
        if dtype not in (None, 'bfloat16'):
            raise ValueError(f'--amp-dtype {dtype} needs CUDA; on CPU use '
                             'bfloat16')
        wrapper.type = 'CPUAmpOptimWrapper'
        dtype = 'bfloat16'
    if dtype is not None:
        wrapper.dtype = dtype


def amp_wrapper_for_device(optim_wrapper: dict) -> dict:
    """An ``optim_wrapper`` config for this machine: mmengine's
    ``AmpOptimWrapper`` (what mmseg's AMP configs name, e.g. its ConvNeXt
    UperNet recipes) becomes :class:`CPUAmpOptimWrapper` in bfloat16 where
    there is no GPU, with a warning saying so; anything else is returned as
    it is. A float16 ``dtype`` stays an error on CPU (naming it).

    Args:
        optim_wrapper (dict): The config's ``optim_wrapper``.

    Returns:
        dict: The same config, or a copy naming ``CPUAmpOptimWrapper``.
    """
    if (not isinstance(optim_wrapper, dict)
            or optim_wrapper.get('type') != 'AmpOptimWrapper'
            or torch.cuda.is_available()):
        return optim_wrapper
    from mmengine.logging import print_log
    print_log('optim_wrapper AmpOptimWrapper needs CUDA; on this CPU it is '
              'CPUAmpOptimWrapper (bfloat16 autocast, no loss scaling)',
              logger='current', level=logging.WARNING)
    return dict(optim_wrapper, type='CPUAmpOptimWrapper')
