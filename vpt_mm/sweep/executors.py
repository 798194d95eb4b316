"""Where a sweep's jobs run: one after another, several at once on this
machine, or on a SLURM cluster.

An executor takes the unfinished jobs of one stage of the protocol (every
grid point of every task, then every final seed) and returns when all of
them have ended; it does not judge them: the sweep then reads what each job
left (:func:`~vpt_mm.sweep.jobs.job_result`), so the choice and the tables
do not depend on where, or in which order, the jobs ran.

- :class:`SequentialExecutor`: one job at a time, its output on this
  terminal (the default).
- :class:`ConcurrentExecutor`: one job per slot at once; a slot is a set of
  GPUs (``CUDA_VISIBLE_DEVICES``) or, on CPU, just a place; each job's
  output goes to its ``job.log``.
- :class:`SlurmExecutor`: one ``sbatch --array`` per stage, waited for
  (``--wait``); each array task runs one job's command, its output in the
  job's ``job.log``.
"""
from __future__ import annotations

import abc
import os
import os.path as osp
import queue
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Sequence

from ..fileio import atomic_file
from .jobs import LOG_FILE, Job

__all__ = [
    'Executor', 'SequentialExecutor', 'ConcurrentExecutor', 'SlurmExecutor',
    'device_slots'
]

Log = Callable[[str], None]


class Executor(abc.ABC):
    """Runs jobs; :meth:`run` returns when every job has ended."""

    #: Ports of ``tools/dist_train.sh`` start here; concurrent slots get
    #: their own.
    base_port = 29500

    def __init__(self,
                 log: Optional[Log] = None,
                 threads: Optional[int] = None) -> None:
        self.log = log or (lambda msg: print(f'[sweep] {msg}', flush=True))
        if threads is not None and threads < 1:
            raise ValueError(f'threads per job must be >= 1, got {threads}')
        #: CPU threads of each job (``OMP_NUM_THREADS``); None: torch's
        #: default. The thread count changes float rounding, so compare
        #: sweeps run with the same one.
        self.threads = threads

    def job_env(self, **extra: str) -> Dict[str, str]:
        """The environment of a job: this one, the thread count, ``extra``."""
        env = dict(os.environ, **extra)
        if self.threads is not None:
            env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(
                self.threads)
        return env

    @abc.abstractmethod
    def run(self, jobs: Sequence[Job]) -> None:
        """Run the jobs (all unfinished) to their end, whatever their exit
        status."""


class SequentialExecutor(Executor):
    """One job after another, in the grid's order, output on the
    terminal."""

    def run(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self.log(f'run {job.name}')
            subprocess.run(job.command, env=self.job_env())


def device_slots(devices: Sequence[str], per_job: int) -> List[str]:
    """Split ``devices`` (e.g. ``['0', '1', '2', '3']``) into groups of
    ``per_job`` GPUs, one ``CUDA_VISIBLE_DEVICES`` value per group.

    Raises:
        ValueError: If the devices do not split evenly.
    """
    if not devices or len(devices) % per_job:
        raise ValueError(f'{len(devices)} device(s) {list(devices)} cannot '
                         f'be split into jobs of {per_job} GPU(s) each')
    return [','.join(devices[i:i + per_job])
            for i in range(0, len(devices), per_job)]


class ConcurrentExecutor(Executor):
    """As many jobs at once as there are slots.

    On CPU (``slots`` a number) each job gets ``threads`` CPU threads,
    by default the cores divided among the slots: torch's default (every
    core per job) would make concurrent jobs slower than sequential ones.

    Args:
        slots (int | list[str]): A number of CPU slots (``--jobs N``), or one
            ``CUDA_VISIBLE_DEVICES`` value per slot (:func:`device_slots`).
        log (callable, optional): Progress messages.
        threads (int, optional): CPU threads per job.
    """

    def __init__(self,
                 slots,
                 log: Optional[Log] = None,
                 threads: Optional[int] = None) -> None:
        if isinstance(slots, int):
            if slots < 1:
                raise ValueError(f'--jobs must be >= 1, got {slots}')
            if threads is None:
                threads = max(1, (os.cpu_count() or 1) // slots)
            slots = [None] * slots
        super().__init__(log, threads)
        self.slots: List[Optional[str]] = list(slots)

    def run(self, jobs: Sequence[Job]) -> None:
        # As many workers as slots: a worker always finds a slot free.
        free: queue.SimpleQueue = queue.SimpleQueue()
        for slot in range(len(self.slots)):
            free.put(slot)

        def run_one(job: Job) -> None:
            slot = free.get()
            env = self.job_env(PORT=str(self.base_port + slot))
            if self.slots[slot] is not None:
                env['CUDA_VISIBLE_DEVICES'] = self.slots[slot]
            where = (f'GPU {self.slots[slot]}' if self.slots[slot]
                     is not None else f'slot {slot}')
            self.log(f'run {job.name} ({where})')
            try:
                os.makedirs(job.work_dir, exist_ok=True)
                with open(osp.join(job.work_dir, LOG_FILE), 'a') as out:
                    subprocess.run(job.command, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
            finally:
                free.put(slot)

        with ThreadPoolExecutor(len(self.slots)) as pool:
            for future in [pool.submit(run_one, job) for job in jobs]:
                future.result()


class SlurmExecutor(Executor):
    """Each stage's jobs as one SLURM job array, waited for.

    The array script is written to ``<sweep>/slurm/<stage>.sh`` (one line
    per job in ``<stage>.jobs``) and submitted with ``sbatch --wait``; a job
    that fails is reported by the sweep afterwards, from the files it did
    (not) leave, exactly as locally.

    Args:
        partition (str): SLURM partition (``-p``).
        work_dir (str): The sweep's root (the scripts go under ``slurm/``).
        gpus (int): GPUs per job (``--gres=gpu:N``; 0 asks for none).
        cpus_per_task (int): ``--cpus-per-task``.
        max_parallel (int, optional): At most this many array tasks at once
            (``--array=0-N%M``).
        sbatch_args (list[str]): More ``sbatch`` arguments, e.g.
            ``['--time=04:00:00', '--qos=normal']``.
        job_name (str): ``--job-name``.
        log (callable, optional): Progress messages.
        threads (int, optional): CPU threads per job; defaults to
            ``cpus_per_task``.
    """

    def __init__(self,
                 partition: str,
                 work_dir: str,
                 gpus: int = 1,
                 cpus_per_task: int = 5,
                 max_parallel: Optional[int] = None,
                 sbatch_args: Sequence[str] = (),
                 job_name: str = 'vpt_mm_sweep',
                 log: Optional[Log] = None,
                 threads: Optional[int] = None) -> None:
        super().__init__(log, threads or cpus_per_task)
        if not partition:
            raise ValueError('a SLURM sweep needs --partition')
        self.partition = partition
        self.work_dir = work_dir
        self.gpus = gpus
        self.cpus_per_task = cpus_per_task
        self.max_parallel = max_parallel
        self.sbatch_args = list(sbatch_args)
        self.job_name = job_name
        self._stage = 0  # stages submitted so far, naming the scripts

    def script(self, jobs: Sequence[Job], stage: str) -> str:
        """Write the array script of ``jobs``; its path."""
        folder = osp.join(self.work_dir, 'slurm')
        os.makedirs(folder, exist_ok=True)
        lines = osp.join(folder, f'{stage}.jobs')
        with atomic_file(lines) as f:
            for job in jobs:
                f.write(f'cd {shlex.quote(os.getcwd())} && '
                        f'{shlex.join(job.command)} > '
                        f'{shlex.quote(osp.join(job.work_dir, LOG_FILE))} '
                        '2>&1\n')
        array = f'0-{len(jobs) - 1}'
        if self.max_parallel:
            array += f'%{self.max_parallel}'
        directives = [
            f'--job-name={self.job_name}', f'--partition={self.partition}',
            f'--array={array}', '--ntasks=1',
            f'--cpus-per-task={self.cpus_per_task}',
            f'--output={osp.join(folder, f"{stage}_%a.out")}',
        ]
        if self.gpus:
            directives.append(f'--gres=gpu:{self.gpus}')
        path = osp.join(folder, f'{stage}.sh')
        with atomic_file(path) as f:
            f.write('#!/bin/bash\n')
            f.writelines(f'#SBATCH {d}\n' for d in directives)
            f.write('set -o pipefail\n'
                    # dist_train.sh jobs sharing a node need their own port
                    'export PORT=$((29500 + SLURM_ARRAY_TASK_ID % 10000))\n'
                    f'export OMP_NUM_THREADS={self.threads} '
                    f'MKL_NUM_THREADS={self.threads}\n'
                    f'line=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" '
                    f'{shlex.quote(lines)})\n'
                    'eval "$line"\n')
        return path

    def run(self, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        for job in jobs:
            os.makedirs(job.work_dir, exist_ok=True)
        path = self.script(jobs, f'stage{self._stage}')
        self._stage += 1
        cmd = ['sbatch', '--wait', *self.sbatch_args, path]
        self.log(f'submit {len(jobs)} job(s) to SLURM partition '
                 f'{self.partition}: {" ".join(cmd)}')
        proc = subprocess.run(cmd, capture_output=True, text=True)
        self.log((proc.stdout + proc.stderr).strip() or
                 f'sbatch exited {proc.returncode}')
        if proc.returncode != 0 and 'Submitted batch job' not in proc.stdout:
            raise RuntimeError(f'sbatch could not submit {path}: '
                               f'{proc.stderr.strip()}')
