"""The paper's benchmark protocol as restartable jobs (``tools/sweep.py``).

- :mod:`~vpt_mm.sweep.grid`: the grids, a grid point's job options, the
  choice of the best point;
- :mod:`~vpt_mm.sweep.jobs`: one job, its recorded config and its result;
- :mod:`~vpt_mm.sweep.executors`: where jobs run (one at a time, several at
  once on local devices, SLURM job arrays);
- :mod:`~vpt_mm.sweep.protocol`: :class:`Sweep`, tune -> select -> final
  seeds -> tables.
"""
from .executors import (
    ConcurrentExecutor,
    Executor,
    SequentialExecutor,
    SlurmExecutor,
    device_slots,
)
from .grid import (
    FULL_LRS,
    VPT_LRS,
    WEIGHT_DECAYS,
    SweepSpec,
    grid,
    overrides,
    point_name,
    select_best,
)
from .jobs import Job, job_result, record_config
from .protocol import Sweep

__all__ = [
    'ConcurrentExecutor', 'Executor', 'FULL_LRS', 'Job', 'SequentialExecutor',
    'SlurmExecutor', 'Sweep', 'SweepSpec', 'VPT_LRS', 'WEIGHT_DECAYS',
    'device_slots', 'grid', 'job_result', 'overrides', 'point_name',
    'record_config', 'select_best'
]
