"""What ``tools/train.py`` and ``tools/test.py`` share: config merging and
the CPU path of mmengine's distributed runner.

mmengine's ``pytorch`` launcher calls ``torch.cuda.set_device`` and wraps the
model with ``device_ids=[LOCAL_RANK]``, both of which fail without a GPU.
:func:`setup_distributed` initialises the process group itself on CPU
(gloo) before the runner is built, so mmengine finds it initialised, and
wraps the model in DDP without device ids. On CUDA nothing changes: nccl,
as configured in ``env_cfg.dist_cfg``.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the train and test entry points."""
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='directory for logs and models')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config keys, e.g. '
        'model.backbone.prompt_cfg.num_tokens=10')
    parser.add_argument(
        '--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def config_from_file(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Load a config, apply ``--cfg-options`` and set its default scope.

    Args:
        path (str): Config file.
        cfg_options (dict, optional): Parsed ``--cfg-options``.

    Returns:
        Config: The merged config.
    """
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    return cfg


def load_config(args: argparse.Namespace) -> Config:
    """Load the config and apply ``--cfg-options``, ``--work-dir``,
    ``--launcher``; the default work dir is ``work_dirs/<config name>``."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = config_from_file(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def enable_amp(cfg: Config, dtype: Optional[str] = None) -> None:
    """Switch the optimizer wrapper to mmengine's ``AmpOptimWrapper``."""
    wrapper = cfg.optim_wrapper
    if wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
        return
    wrapper.type = 'AmpOptimWrapper'
    wrapper.setdefault('loss_scale', 'dynamic')
    if dtype is not None:
        wrapper.dtype = dtype


def setup_distributed(cfg: Config) -> None:
    """Prepare the CPU (gloo) path of a distributed run; no-op on CUDA.

    Args:
        cfg (Config): The merged config; ``cfg.launcher`` is read.
    """
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    if cfg.launcher != 'pytorch':
        raise ValueError(f'launcher {cfg.launcher!r} needs CUDA; on CPU use '
                         "'pytorch' (tools/dist_train.sh)")
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    cfg.env_cfg.dist_cfg['backend'] = 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    if cfg.get('model_wrapper_cfg', None) is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False)
