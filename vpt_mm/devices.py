"""Devices: the ``--device`` of the tools that run a model outside mmengine's
runner, and the CUDA environment of deterministic runs."""
from __future__ import annotations

import argparse
import os

import torch
from mmengine.config import Config


def default_device() -> str:
    """``'cuda'`` where CUDA is available, else ``'cpu'`` (as mmpretrain's
    inferencers choose)."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def device_arg(name: str) -> str:
    """A ``--device`` value: any device torch names (``cpu``, ``cuda``,
    ``cuda:1``); CUDA ones only where CUDA is available."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise argparse.ArgumentTypeError(
            f'{name!r} is not a device torch knows ({err})') from None
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f'--device {name}: CUDA is not available here (torch '
                f'{torch.__version__})')
        if (device.index or 0) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f'--device {name}: this process sees '
                f'{torch.cuda.device_count()} CUDA device(s)')
    return name


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    """The ``--device`` of every tool that runs a model outside mmengine's
    runner (which places the model itself): the model and every tensor it
    meets go there. Defaults to :func:`default_device`."""
    parser.add_argument(
        '--device', type=device_arg, default=default_device(),
        help='device to run on, e.g. cpu, cuda, cuda:1 (default: cuda '
        'where available, else cpu)')


#: cuBLAS's workspace setting for reproducible matrix products (CUDA's
#: documentation, "Results reproducibility").
CUBLAS_DETERMINISTIC = ':4096:8'


def deterministic_cuda_env(cfg: Config) -> None:
    """With ``randomness.deterministic=True`` (``tools/train.py
    --deterministic``), set ``CUBLAS_WORKSPACE_CONFIG`` (unless set): torch's
    deterministic mode, which mmengine switches on, refuses cuBLAS products
    without it. Call it before the first CUDA matrix product (cuBLAS reads
    it when its handle is made); :func:`build_runner` does."""
    randomness = cfg.get('randomness', None) or {}
    if randomness.get('deterministic', False):
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', CUBLAS_DETERMINISTIC)
