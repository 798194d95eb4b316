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
with several processes) in its own work dir. A job is finished when its
``test_metrics.json`` exists (written atomically at the very end), or when
it diverged (``diverged.json``, written by the ``NonFiniteLossHook``): a
restarted sweep skips finished jobs and resumes unfinished ones from their
last checkpoint (``--resume``).

**A diverged job is never a number.** A diverged grid point is recorded as
such in ``best.json`` and ``hparams`` and never selected; a task whose every
grid point diverged, or a final seed that diverged, is reported as
``failed`` in the tables (and ``tools/sweep.py`` exits with an error).

**Jobs cannot mix configs.** Each job records the digest of its resolved
config (the file after ``_base_`` merging, plus every option) in
``job.json``; a restarted sweep refuses to reuse a job whose config changed,
naming the difference. ``restart=True`` (``--restart``) reruns such jobs
from scratch.

Layout::

    <root>/sweep.json                   the protocol's arguments
    <root>/<task>/tune/lr<lr>_wd<wd>[_p<p>]/job.json, test_metrics.json
    <root>/<task>/best.json
    <root>/<task>/final/seed<s>/job.json, test_metrics.json
    <root>/records.json  results.{md,csv,json}  hparams.{md,json}
"""
from __future__ import annotations

import copy
import glob
import hashlib
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .datasets import TASKS, get_task, tasks_of
from .evaluation import write_results
from .hooks import DIVERGED_FILE
from .runner import (
    apply_task,
    config_from_file,
    flatten_config,
    parse_cfg_options,
    write_json,
)

#: The paper's grids (Table 6): base lr of VPT and linear probing, base lr
#: of full fine-tuning, weight decay.
VPT_LRS = (50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05)
FULL_LRS = (0.001, 0.0005, 0.0001, 0.005)
WEIGHT_DECAYS = (0.01, 0.001, 0.0001, 0.0)
METRIC = 'accuracy/top1'
#: A job's record of its resolved config.
JOB_FILE = 'job.json'


@dataclass
class SweepSpec:
    """What defines a sweep; a restart must give the same values.

    Attributes:
        config (str): Benchmark config (VTAB-1k or FGVC).
        lrs (list[float]): Base learning rates (scaled by total batch / 256
            by the config's ``auto_scale_lr``).
        weight_decays (list[float]): Weight decays.
        num_tokens (list[int]): Prompt lengths to try; empty keeps the
            config's.
        train_fraction (float, optional): Seeded fraction of the training
            split (data-size study); None uses all of it.
        fraction_seed (int): Seed of ``train_fraction``.
        cfg_options (list[str]): ``key=value`` overrides for every job.
    """
    config: str
    lrs: List[float]
    weight_decays: List[float]
    num_tokens: List[int] = field(default_factory=list)
    train_fraction: Optional[float] = None
    fraction_seed: int = 0
    cfg_options: List[str] = field(default_factory=list)


def _fmt(value: float) -> str:
    return f'{value:g}'


def grid(spec: SweepSpec) -> List[Dict[str, float]]:
    """The tuning grid: ``dict(lr=, weight_decay=[, num_tokens=])``."""
    points = []
    for lr in spec.lrs:
        for wd in spec.weight_decays:
            for p in (spec.num_tokens or [None]):
                point = dict(lr=float(lr), weight_decay=float(wd))
                if p is not None:
                    point['num_tokens'] = int(p)
                points.append(point)
    return points


def point_name(point: Dict[str, float]) -> str:
    """Folder name of a grid point, e.g. ``lr2.5_wd0.0001_p10``."""
    name = f'lr{_fmt(point["lr"])}_wd{_fmt(point["weight_decay"])}'
    if 'num_tokens' in point:
        name += f'_p{int(point["num_tokens"])}'
    return name


def select_best(scores: Sequence[dict]) -> dict:
    """The best grid point: highest score; ties to the smaller lr, then the
    larger weight decay (as the official tuning script, which visits weight
    decays from large to small and keeps the first of equal scores at one
    lr), then the shorter prompt.

    Args:
        scores (Sequence[dict]): Grid points with a ``top1`` score; points
            whose ``top1`` is None (diverged) are never chosen.

    Returns:
        dict: The chosen grid point (with its ``top1``).
    """
    scores = [s for s in scores if s.get('top1') is not None]
    if not scores:
        raise ValueError('No scored grid point to select from')
    return min(
        scores,
        key=lambda s: (-s['top1'], s['lr'], -s['weight_decay'],
                       s.get('num_tokens', 0)))


def overrides(point: Dict[str, float], splits: Tuple[str, str],
              spec: SweepSpec, seed: int) -> List[str]:
    """``--cfg-options`` of one job."""
    train_split, score_split = splits
    opts = [
        f'train_dataloader.dataset.split={train_split}',
        f'test_dataloader.dataset.split={score_split}',
        f'optim_wrapper.optimizer.lr={_fmt(point["lr"])}',
        f'optim_wrapper.optimizer.weight_decay={_fmt(point["weight_decay"])}',
        f'randomness.seed={seed}',
    ]
    if 'num_tokens' in point:
        opts.append('model.backbone.prompt_cfg.num_tokens='
                    f'{int(point["num_tokens"])}')
    if spec.train_fraction is not None:
        opts += [
            f'train_dataloader.dataset.train_fraction={spec.train_fraction}',
            f'train_dataloader.dataset.fraction_seed={spec.fraction_seed}',
        ]
    return opts + list(spec.cfg_options)


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
                 restart: bool = False) -> None:
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
        #: Tasks that gave no number, with the reason.
        self.failed: Dict[str, str] = {}
        self._base_cfg = None
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
        (:func:`~vpt_mm.runner.flatten_config`)."""
        if self._base_cfg is None:
            self._base_cfg = config_from_file(
                self.spec.config, parse_cfg_options(self.spec.cfg_options))
        cfg = copy.deepcopy(self._base_cfg)
        job_options = parse_cfg_options(opts)
        if job_options:
            cfg.merge_from_dict(job_options)
        apply_task(cfg, task)
        return flatten_config(cfg)

    def check_job(self, task: str, work_dir: str, opts: List[str]) -> None:
        """Record a new job's config, or check a job's recorded config
        equals today's before it is reused.

        Raises:
            ValueError: If the job ran with another config (naming the
                differences) and ``restart`` is off.
        """
        config = self.job_config(task, opts)
        sha = hashlib.sha256(
            json.dumps(config, sort_keys=True).encode()).hexdigest()
        path = osp.join(work_dir, JOB_FILE)
        if osp.isdir(work_dir) and os.listdir(work_dir):
            reason = None
            if not osp.isfile(path):
                reason = ('it records no config (run by an older vpt_mm), '
                          'so it cannot be checked')
            else:
                with open(path) as f:
                    recorded = json.load(f)
                if recorded.get('config_sha256') == sha:
                    return
                old = recorded.get('config', {})
                diff = {
                    k: (old.get(k), config.get(k))
                    for k in sorted(set(old) | set(config))
                    if old.get(k) != config.get(k)
                }
                shown = dict(list(diff.items())[:5])
                reason = (f'its config changed ({len(diff)} key(s); '
                          f'{{key: (then, now)}}: {shown})')
            if not self.restart:
                raise ValueError(
                    f'Job {work_dir} cannot be reused: {reason}. Revert the '
                    'change, use another --work-dir, or --restart to rerun '
                    'the changed jobs')
            if self.dry_run:
                print(f'# would restart {work_dir}: {reason}')
                return
            self._log(f'restart {osp.relpath(work_dir, self.work_dir)}: '
                      f'{reason}')
            shutil.rmtree(work_dir)
        if not self.dry_run:
            os.makedirs(work_dir, exist_ok=True)
            write_json(dict(config_sha256=sha, config=config), path)

    def run_job(self, task: str, work_dir: str,
                opts: List[str]) -> Optional[dict]:
        """Run one job unless finished.

        Returns:
            dict | None: ``dict(top1=...)``, or ``dict(top1=None,
            diverged={iter, epoch, loss, lr})`` for a run stopped by a
            non-finite loss; None in a dry run.
        """
        self.check_job(task, work_dir, opts)
        metrics_file = osp.join(work_dir, 'test_metrics.json')
        diverged_file = osp.join(work_dir, DIVERGED_FILE)
        if not osp.isfile(metrics_file) and not osp.isfile(diverged_file):
            cmd = self.command(task, work_dir, opts)
            if self.dry_run:
                print(' '.join(cmd))
                return None
            self._log(f'run {osp.relpath(work_dir, self.work_dir)}')
            proc = subprocess.run(cmd)
            if proc.returncode != 0 and not osp.isfile(diverged_file):
                raise RuntimeError(
                    f'Job {work_dir} failed (exit {proc.returncode}): '
                    f'{" ".join(cmd)}')
            if not osp.isfile(metrics_file) and not osp.isfile(
                    diverged_file):
                raise RuntimeError(f'Job {work_dir} wrote no '
                                   f'{metrics_file}')
        else:
            self._log(f'done {osp.relpath(work_dir, self.work_dir)}')
        if not self.keep_checkpoints:
            for ckpt in glob.glob(osp.join(work_dir, '*.pth')) + glob.glob(
                    osp.join(work_dir, 'last_checkpoint')):
                os.remove(ckpt)
        if osp.isfile(diverged_file):
            with open(diverged_file) as f:
                info = json.load(f)
            self._log(f'{osp.relpath(work_dir, self.work_dir)} diverged at '
                      f'iteration {info.get("iter")}')
            return dict(top1=None, diverged=info)
        with open(metrics_file) as f:
            metrics = json.load(f)
        if METRIC not in metrics:
            raise KeyError(f'{metrics_file} has no {METRIC!r}: {metrics}')
        return dict(top1=float(metrics[METRIC]))

    def tune(self, task: str) -> Optional[Tuple[Optional[dict], list]]:
        """Tune one task.

        Returns:
            tuple | None: The chosen grid point (None if every point
            diverged) and the names of the diverged points; None in a dry
            run.
        """
        best_file = osp.join(self.work_dir, task, 'best.json')
        scores = []
        for point in grid(self.spec):
            result = self.run_job(
                task, osp.join(self.work_dir, task, 'tune',
                               point_name(point)),
                overrides(point, self.tune_splits, self.spec, seed=0))
            if result is not None:
                scores.append(dict(point, **result))
        if self.dry_run:
            return None
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

    def final(self, task: str, best: dict) -> List[dict]:
        """Retrain with the chosen values, one run per seed; the records
        (``top1=None`` and ``diverged`` for a seed that diverged)."""
        point = {k: v for k, v in best.items() if k != 'top1'}
        records = []
        for seed in range(self.seeds):
            result = self.run_job(
                task, osp.join(self.work_dir, task, 'final', f'seed{seed}'),
                overrides(point, self.final_splits, self.spec, seed=seed))
            if result is not None:
                records.append(
                    dict(method=self.method, backbone=self.backbone,
                         task=task, seed=seed, **point, **result))
                if result['top1'] is None:
                    self.failed[task] = f'final run seed {seed} diverged'
        return records

    def run(self) -> List[dict]:
        """Run every task; write and return the records.

        Tasks that give no number are in :attr:`failed` afterwards, and
        ``failed`` in the tables.
        """
        os.makedirs(self.work_dir, exist_ok=True)
        self.check_spec()
        records, chosen = [], {}
        for task in self.tasks:
            outcome = self.tune(task)
            if outcome is None:  # dry run: final jobs depend on the choice
                continue
            best, diverged = outcome
            if best is None:
                self.failed[task] = 'every grid point diverged'
                chosen[task] = dict(failed=self.failed[task],
                                    diverged=diverged)
                records.append(
                    dict(method=self.method, backbone=self.backbone,
                         task=task, seed=None, top1=None,
                         failed=self.failed[task]))
                continue
            chosen[task] = dict(best, diverged=diverged)
            records += self.final(task, best)
        if self.dry_run:
            return []
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
            cells = [TASKS[task].title, _fmt(best['lr']),
                     _fmt(best['weight_decay'])]
            if with_p:
                cells.append(str(best['num_tokens']))
            cells += [f'{best["top1"]:.2f}', diverged]
            lines.append('| ' + ' | '.join(cells) + ' |')
        with open(osp.join(self.work_dir, 'hparams.md'), 'w') as f:
            f.write('\n'.join(lines) + '\n')


def _dataset_class(dataset_type: str) -> type:
    from .registry import DATASETS
    return DATASETS.get(dataset_type)
