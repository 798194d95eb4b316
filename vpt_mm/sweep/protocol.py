"""The paper's benchmark protocol (Table 6), as restartable jobs.

For each task of a VTAB-1k or FGVC config:

1. **Tune**: train one model per (base_lr, weight decay[, prompt length])
   on the tuning split (VTAB ``train800``, FGVC ``train``) and score its
   final epoch on the held-out split (``val200`` / ``val``).
2. **Select** the best score; ties go to the smaller lr, then the larger
   weight decay (the official script's order), then the shorter prompt.
   The choice and every score are written to ``<task>/best.json``.
3. **Final**: retrain with the chosen values on the final split (VTAB
   ``train800val200``; FGVC ``train``, as the official code) with N seeds
   and test each on the test split.
4. **Tables**: ``results.{md,csv,json}`` (per task mean ± std, group
   means) and ``hparams.{md,json}`` (the chosen values) under the sweep
   folder.

Every job is a run of ``tools/train.py --test`` (or ``tools/dist_train.sh``
with several processes) in its own work dir (:mod:`vpt_mm.sweep.jobs`); an
executor (:mod:`vpt_mm.sweep.executors`) runs each stage's jobs (every grid
point of every task, then every final seed) one after another, several at
once, or on SLURM, with the same files and the same results. A job is
finished when its ``test_metrics.json`` exists (written atomically at the
very end), or when it diverged (``diverged.json``, written by the
``NonFiniteLossHook``): a restarted sweep skips finished jobs and resumes
unfinished ones from their last checkpoint (``--resume``).

**A diverged job is never a number.** A diverged grid point is recorded as
such in ``best.json`` and ``hparams`` and never selected; a task whose every
grid point diverged, or a final seed that diverged, is reported as
``failed`` in the tables (and ``tools/sweep.py`` exits with an error).

**Jobs cannot mix configs or backbones.** Each job records the digest of
its resolved config (the file after ``_base_`` merging, plus every option)
and the sha256 of every checkpoint file it names (``init_cfg.checkpoint``,
``load_from``) in ``job.json``; a restarted sweep refuses to reuse a job
whose config or pretrained checkpoint changed, naming the difference.
``restart=True`` (``--restart``) reruns such jobs from scratch.

**One sweep per folder.** A running sweep holds a lock on
``<root>/sweep.lock`` (which names its process); a second sweep on the same
folder is refused, naming the holder.

Layout::

    <root>/sweep.json                   the protocol's arguments
    <root>/<task>/tune/lr<lr>_wd<wd>[_p<p>]/job.json, test_metrics.json
    <root>/<task>/best.json
    <root>/<task>/final/seed<s>/job.json, test_metrics.json
    <root>/records.json  results.{md,csv,json}  hparams.{md,json}
"""
from __future__ import annotations

import copy
import json
import os
import os.path as osp
import sys
from dataclasses import asdict
from typing import Dict, List, Optional, Sequence, Tuple

from ..config import (
    apply_task,
    config_from_file,
    flatten_config,
    parse_cfg_options,
)
from ..datasets import TASKS, get_task, tasks_of
from ..evaluation import write_results
from ..fileio import atomic_file, write_json
from ..integrity import file_sha256
from .executors import Executor, SequentialExecutor
from .grid import (
    SweepSpec,
    fmt_value,
    grid,
    overrides,
    point_name,
    select_best,
)
from .jobs import Job, job_result, record_config

#: The lock a running sweep holds on its folder.
LOCK_FILE = 'sweep.lock'


class Sweep:
    """Runs the protocol of one config over tasks, resumably.

    Args:
        spec (SweepSpec): The protocol's arguments.
        work_dir (str): Root folder of the sweep.
        tasks (Sequence[str]): Tasks to run; they must belong to the
            config's benchmark.
        benchmark (str): The config's benchmark, ``'vtab1k'`` or
            ``'fgvc'``.
        seeds (int): Number of final runs per task. Defaults to 3.
        method (str): Row label in the results table.
        backbone (str): Row label in the results table.
        gpus (int): Processes per job; more than 1 launches
            ``tools/dist_train.sh``. Defaults to 1.
        keep_checkpoints (bool): Keep each job's checkpoints once its
            metrics are written. Defaults to False (a full sweep would
            otherwise store hundreds of models).
        tools_dir (str): Folder of ``train.py`` and ``dist_train.sh``.
        dry_run (bool): Print the commands of unfinished jobs only.
        restart (bool): Rerun from scratch every job whose config changed
            since it ran (default: such a job is an error), and record new
            sweep arguments.
        executor (Executor, optional): Where the jobs run; defaults to
            :class:`~vpt_mm.sweep.executors.SequentialExecutor`.
    """

    def __init__(self,
                 spec: SweepSpec,
                 work_dir: str,
                 tasks: Sequence[str],
                 benchmark: str,
                 seeds: int = 3,
                 method: str = 'VPT',
                 backbone: str = '',
                 gpus: int = 1,
                 keep_checkpoints: bool = False,
                 tools_dir: str = '',
                 dry_run: bool = False,
                 restart: bool = False,
                 executor: Optional[Executor] = None) -> None:
        if seeds < 1:
            raise ValueError(f'seeds must be >= 1, got {seeds}')
        if gpus < 1:
            raise ValueError(f'gpus must be >= 1, got {gpus}')
        if not spec.lrs or not spec.weight_decays:
            raise ValueError('The lr and weight decay grids must not be '
                             'empty')
        if spec.train_fraction is not None and not (0.0 < spec.train_fraction
                                                    <= 1.0):
            raise ValueError('train_fraction must be in (0, 1], got '
                             f'{spec.train_fraction}')
        if any(p < 1 for p in spec.num_tokens):
            raise ValueError('Prompt lengths must be >= 1, got '
                             f'{spec.num_tokens}')
        for task in tasks:
            if get_task(task).benchmark != benchmark:
                raise ValueError(
                    f'Task {task!r} is not a {benchmark} task; this config '
                    f'runs {", ".join(tasks_of(benchmark))}')
        self.spec = spec
        self.work_dir = work_dir
        self.tasks = list(tasks)
        self.seeds = seeds
        self.method = method
        self.backbone = backbone
        self.gpus = gpus
        self.keep_checkpoints = keep_checkpoints
        self.tools_dir = tools_dir
        self.dry_run = dry_run
        self.restart = restart
        self.executor = executor or SequentialExecutor(self._log)
        #: Tasks that gave no number, with the reason.
        self.failed: Dict[str, str] = {}
        self._base_cfg = None
        self._file_digests: Dict[tuple, str] = {}
        self._lock_fd: Optional[int] = None
        dataset_cls = _dataset_class(get_task(self.tasks[0]).dataset_type)
        self.tune_splits = dataset_cls.TUNE_SPLITS
        self.final_splits = dataset_cls.FINAL_SPLITS

    # -- bookkeeping -------------------------------------------------------
    def check_spec(self) -> None:
        """Record the spec, or check it equals the recorded one."""
        path = osp.join(self.work_dir, 'sweep.json')
        # As it reads back from json (tuples become lists).
        spec = json.loads(json.dumps(asdict(self.spec)))
        if osp.isfile(path):
            with open(path) as f:
                recorded = json.load(f)
            if recorded != spec and not self.restart:
                diff = {
                    k: (recorded.get(k), v)
                    for k, v in spec.items() if recorded.get(k) != v
                }
                raise ValueError(
                    f'{path} records a different sweep ({{key: (recorded, '
                    f'now)}}: {diff}); use another --work-dir, the same '
                    'arguments, or --restart')
            if recorded == spec:
                return
        if not self.dry_run:
            write_json(spec, path)

    def _log(self, msg: str) -> None:
        print(f'[sweep] {msg}', flush=True)

    # -- jobs ----------------------------------------------------------------
    def command(self, task: str, work_dir: str, opts: List[str]) -> List[str]:
        """The train command of one job."""
        if self.gpus > 1:
            launch = [
                'bash',
                osp.join(self.tools_dir, 'dist_train.sh'), self.spec.config,
                str(self.gpus)
            ]
        else:
            launch = [
                sys.executable,
                osp.join(self.tools_dir, 'train.py'), self.spec.config
            ]
        return launch + [
            '--task', task, '--work-dir', work_dir, '--resume',
            '--no-validate', '--test', '--cfg-options'
        ] + opts

    def job_config(self, task: str, opts: List[str]) -> Dict[str, object]:
        """The resolved config of one job, flattened
        (:func:`~vpt_mm.config.flatten_config`)."""
        if self._base_cfg is None:
            self._base_cfg = config_from_file(
                self.spec.config, parse_cfg_options(self.spec.cfg_options))
        cfg = copy.deepcopy(self._base_cfg)
        job_options = parse_cfg_options(opts)
        if job_options:
            cfg.merge_from_dict(job_options)
        apply_task(cfg, task)
        config = flatten_config(cfg)
        for key, value in list(config.items()):
            if ((key.endswith('init_cfg.checkpoint') or key == 'load_from')
                    and isinstance(value, str) and osp.isfile(value)):
                config[f'{key}.sha256'] = self._checkpoint_sha256(value)
        return config

    def _checkpoint_sha256(self, path: str) -> str:
        """sha256 of a checkpoint file, hashed once per sweep process for a
        given file (path, inode, size and modification time)."""
        st = os.stat(path)
        key = (osp.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self._file_digests:
            self._file_digests[key] = file_sha256(path)
        return self._file_digests[key]

    def check_job(self, task: str, work_dir: str, opts: List[str]) -> None:
        """Record a new job's resolved config, or check that a job's
        recorded config equals today's before it is reused
        (:func:`~vpt_mm.sweep.jobs.record_config`)."""
        record_config(work_dir, self.job_config(task, opts), self.restart,
                      self.dry_run, self._log)

    def _job(self, task: str, rel: str, opts: List[str]) -> Job:
        work_dir = osp.join(self.work_dir, task, rel)
        return Job(name=osp.join(task, rel), work_dir=work_dir,
                   command=self.command(task, work_dir, opts), task=task,
                   opts=opts)

    def run_stage(self, jobs: Sequence[Job]) -> Optional[List[dict]]:
        """Check the recorded config of every job, run the unfinished ones
        on the executor, read every result.

        Returns:
            list | None: One result per job (see
            :func:`~vpt_mm.sweep.jobs.job_result`); None in a dry run.
        """
        for job in jobs:
            self.check_job(job.task, job.work_dir, job.opts)
        todo = [job for job in jobs if not job.finished]
        if self.dry_run:
            for job in todo:
                print(' '.join(job.command))
            return None
        for job in jobs:
            if job not in todo:
                self._log(f'done {job.name}')
        self.executor.run(todo)
        results = []
        for job in jobs:
            result = job_result(job, self.keep_checkpoints)
            if result['top1'] is None:
                self._log(f'{job.name} diverged at iteration '
                          f'{result["diverged"].get("iter")}')
            results.append(result)
        return results

    def tune(self) -> Optional[Dict[str, Tuple[Optional[dict], list]]]:
        """Run every task's grid (one stage) and choose each task's point.

        Returns:
            dict | None: Per task, the chosen grid point (None if every
            point diverged) and the names of the diverged points; None in a
            dry run.
        """
        points = grid(self.spec)
        jobs = [
            self._job(task, osp.join('tune', point_name(point)),
                      overrides(point, self.tune_splits, self.spec, seed=0))
            for task in self.tasks for point in points
        ]
        results = self.run_stage(jobs)
        if results is None:
            return None
        outcome = {}
        for t, task in enumerate(self.tasks):
            scores = [
                dict(point, **result) for point, result in zip(
                    points, results[t * len(points):(t + 1) * len(points)])
            ]
            outcome[task] = self._choose(task, scores)
        return outcome

    def _choose(self, task: str,
                scores: List[dict]) -> Tuple[Optional[dict], list]:
        """Select a task's grid point and write ``<task>/best.json``."""
        best_file = osp.join(self.work_dir, task, 'best.json')
        diverged = [point_name(s) for s in scores if s['top1'] is None]
        if len(diverged) == len(scores):
            write_json(
                dict(task=task, splits=list(self.tune_splits), chosen=None,
                     failed='every grid point diverged', diverged=diverged,
                     scores=scores), best_file)
            self._log(f'{task}: FAILED, every grid point diverged')
            return None, diverged
        best = select_best(scores)
        write_json(
            dict(task=task, splits=list(self.tune_splits), chosen=best,
                 diverged=diverged, scores=scores), best_file)
        self._log(f'{task}: chose {point_name(best)} '
                  f'({self.tune_splits[1]} top-1 {best["top1"]:.2f}'
                  f'{f"; {len(diverged)} diverged" if diverged else ""})')
        return best, diverged

    def final(self, chosen: Dict[str, dict]) -> List[dict]:
        """Retrain every task with its chosen values, one run per seed (one
        stage); the records, in task then seed order (``top1=None`` and
        ``diverged`` for a seed that diverged)."""
        runs = []
        for task, best in chosen.items():
            point = {k: v for k, v in best.items() if k != 'top1'}
            for seed in range(self.seeds):
                runs.append((task, point, seed, self._job(
                    task, osp.join('final', f'seed{seed}'),
                    overrides(point, self.final_splits, self.spec, seed))))
        results = self.run_stage([job for *_, job in runs]) or []
        records = []
        for (task, point, seed, _), result in zip(runs, results):
            records.append(
                dict(method=self.method, backbone=self.backbone, task=task,
                     seed=seed, **point, **result))
            if result['top1'] is None:
                self.failed[task] = f'final run seed {seed} diverged'
        return records

    def run(self) -> List[dict]:
        """Run every task; write and return the records.

        Tasks that give no number are in :attr:`failed` afterwards, and
        ``failed`` in the tables.
        """
        os.makedirs(self.work_dir, exist_ok=True)
        if not self.dry_run:
            self.lock()
        try:
            return self._run()
        finally:
            self.unlock()

    def lock(self) -> None:
        """Take the sweep folder's lock (``sweep.lock``), or refuse.

        Raises:
            RuntimeError: If another sweep holds it, naming that sweep's
                process, host and start time.
        """
        import fcntl
        import socket
        import time
        path = osp.join(self.work_dir, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 4096).decode(errors='replace').strip()
            os.close(fd)
            raise RuntimeError(
                f'{self.work_dir} is in use by another sweep '
                f'({holder or "unknown process"}): two sweeps on one folder '
                'would run jobs twice or overwrite each other. Wait for it, '
                'or use another --work-dir') from None
        os.ftruncate(fd, 0)
        os.write(fd, (f'pid {os.getpid()} on {socket.gethostname()}, since '
                      f'{time.strftime("%Y-%m-%d %H:%M:%S")}\n').encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock taken by :meth:`lock` (closing it releases it;
        the file stays)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _run(self) -> List[dict]:
        self.check_spec()
        outcome = self.tune()
        if outcome is None:  # dry run: final jobs depend on the choice
            return []
        chosen, to_final, failed_records = {}, {}, {}
        for task, (best, diverged) in outcome.items():
            if best is None:
                self.failed[task] = 'every grid point diverged'
                chosen[task] = dict(failed=self.failed[task],
                                    diverged=diverged)
                failed_records[task] = dict(
                    method=self.method, backbone=self.backbone, task=task,
                    seed=None, top1=None, failed=self.failed[task])
                continue
            chosen[task] = dict(best, diverged=diverged)
            to_final[task] = best
        finals = self.final(to_final)
        records = []
        for task in self.tasks:
            if task in failed_records:
                records.append(failed_records[task])
            records += [r for r in finals if r['task'] == task]
        write_json(records, osp.join(self.work_dir, 'records.json'))
        write_results(records, osp.join(self.work_dir, 'results'))
        self.write_hparams(chosen)
        self._log(f'tables: {osp.join(self.work_dir, "results.md")}')
        for task, reason in self.failed.items():
            self._log(f'FAILED {task}: {reason}')
        return records

    def write_hparams(self, chosen: Dict[str, dict]) -> None:
        """Write the chosen hyper-parameters next to the results."""
        write_json(chosen, osp.join(self.work_dir, 'hparams.json'))
        with_p = bool(self.spec.num_tokens)
        header = ['Task', 'base lr', 'weight decay']
        if with_p:
            header.append('p')
        header += [f'{self.tune_splits[1]} top-1', 'diverged']
        lines = ['| ' + ' | '.join(header) + ' |',
                 '|' + '|'.join(['---'] * len(header)) + '|']
        for task in TASKS:
            if task not in chosen:
                continue
            best = chosen[task]
            diverged = str(len(best['diverged']))
            if 'failed' in best:
                cells = [TASKS[task].title] + ['failed'] * (len(header) - 2)
                lines.append('| ' + ' | '.join(cells + [diverged]) + ' |')
                continue
            cells = [TASKS[task].title, fmt_value(best['lr']),
                     fmt_value(best['weight_decay'])]
            if with_p:
                cells.append(str(best['num_tokens']))
            cells += [f'{best["top1"]:.2f}', diverged]
            lines.append('| ' + ' | '.join(cells) + ' |')
        with atomic_file(osp.join(self.work_dir, 'hparams.md')) as f:
            f.write('\n'.join(lines) + '\n')


def _dataset_class(dataset_type: str) -> type:
    from ..registry import DATASETS
    return DATASETS.get(dataset_type)
