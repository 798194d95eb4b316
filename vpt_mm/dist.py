"""Distributed setup: the CPU path of mmengine's distributed runner.

mmengine's ``pytorch`` launcher calls ``torch.cuda.set_device`` and wraps the
model with ``device_ids=[LOCAL_RANK]``, both of which fail without a GPU.
:func:`setup_distributed` initialises the process group itself on CPU
(gloo) before the runner is built, so mmengine finds it initialised, and
wraps the model in DDP without device ids. On CUDA nothing changes: nccl,
as configured in ``env_cfg.dist_cfg``.
"""
from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
from mmengine.config import Config

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def slurm_to_torch_env() -> None:
    """Set torch.distributed's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) from that of an srun
    task, as mmengine does for its slurm launcher on CUDA. The master is the
    first node of the job; the port is ``MASTER_PORT``, else ``PORT``, else
    29500.

    Raises:
        ValueError: Outside an srun task.
    """
    missing = [k for k in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST')
               if k not in os.environ]
    if missing:
        raise ValueError(f'--launcher slurm outside an srun task (no '
                         f'{missing}); use tools/slurm_train.sh')
    import subprocess
    nodes = subprocess.run(
        ['scontrol', 'show', 'hostnames', os.environ['SLURM_NODELIST']],
        capture_output=True, text=True, check=True).stdout.split()
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ.setdefault('MASTER_ADDR', nodes[0])
    os.environ.setdefault('MASTER_PORT', os.environ.get('PORT', '29500'))


def setup_distributed(cfg: Config) -> None:
    """Prepare the CPU (gloo) path of a distributed run; no-op on CUDA.

    Args:
        cfg (Config): The merged config; ``cfg.launcher`` is read.
    """
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    if cfg.launcher == 'slurm':
        # srun's processes (tools/slurm_train.sh on a CPU partition): the
        # torchrun environment from SLURM's, then the gloo path below.
        slurm_to_torch_env()
        cfg.launcher = 'pytorch'
    if cfg.launcher != 'pytorch':
        raise ValueError(f'launcher {cfg.launcher!r} needs CUDA; on CPU use '
                         "'pytorch' (tools/dist_train.sh) or 'slurm' "
                         '(tools/slurm_train.sh)')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    cfg.env_cfg.dist_cfg['backend'] = 'gloo'
    if replace_sync_bn(cfg.model):
        from mmengine.logging import print_log
        print_log('SyncBN needs CUDA: on CPU every process normalises its '
                  'own batch (BN)', logger='current', level=logging.WARNING)
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    if cfg.get('model_wrapper_cfg', None) is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False)


def replace_sync_bn(cfg: object) -> int:
    """Replace ``dict(type='SyncBN')`` norm configs by ``'BN'`` in place.

    Returns:
        int: How many were replaced.
    """
    count = 0
    if isinstance(cfg, dict):
        if cfg.get('type') == 'SyncBN':
            cfg['type'] = 'BN'
            count += 1
        for value in cfg.values():
            count += replace_sync_bn(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            count += replace_sync_bn(value)
    return count


def teardown_distributed() -> None:
    """Destroy the default process group, if any, before the interpreter
    exits.

    Left to interpreter shutdown, gloo's worker threads can still hold
    tensors when Python is torn down, and the process dies with SIGABRT
    after a successful run; ``tools/train.py`` and ``tools/test.py`` call
    this once they are done.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
