"""One job of a sweep: a ``tools/train.py --test`` run in its own folder,
with the record of its resolved config and the result it leaves.

A job is finished when its ``test_metrics.json`` exists (written atomically
at the very end) or when it diverged (``diverged.json``, written by the
``NonFiniteLossHook``). Before a job runs, its resolved config is recorded
in ``job.json`` (:func:`record_config`); a restarted sweep refuses to reuse
a job whose config changed.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import os.path as osp
import shutil
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from ..fileio import write_json
from ..hooks import DIVERGED_FILE

#: The score of a job.
METRIC = 'accuracy/top1'
#: A job's record of its resolved config.
JOB_FILE = 'job.json'
#: A job's metrics, written by tools/train.py --test at the very end.
METRICS_FILE = 'test_metrics.json'
#: Where an executor that captures a job's output writes it.
LOG_FILE = 'job.log'


@dataclass
class Job:
    """One run of the sweep.

    Attributes:
        name (str): Its folder relative to the sweep root, for messages.
        work_dir (str): Its own folder (``--work-dir``).
        command (list[str]): The command that runs it.
        task (str): The benchmark task it trains on.
        opts (list[str]): Its ``--cfg-options`` (what its recorded config
            is resolved from).
    """
    name: str
    work_dir: str
    command: List[str]
    task: str = ''
    opts: List[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Whether it has metrics or diverged."""
        return (osp.isfile(osp.join(self.work_dir, METRICS_FILE))
                or osp.isfile(osp.join(self.work_dir, DIVERGED_FILE)))


def config_digest(config: Dict[str, object]) -> str:
    """The sha256 of a flattened resolved config."""
    return hashlib.sha256(json.dumps(config,
                                     sort_keys=True).encode()).hexdigest()


def record_config(work_dir: str,
                  config: Dict[str, object],
                  restart: bool = False,
                  dry_run: bool = False,
                  log: Optional[Callable[[str], None]] = None) -> None:
    """Record a new job's resolved config, or check that a job's recorded
    config equals today's before it is reused.

    Args:
        work_dir (str): The job's folder.
        config (dict): Its flattened resolved config.
        restart (bool): Delete a job whose config changed (to be rerun)
            instead of raising.
        dry_run (bool): Write nothing; say what would be restarted.
        log (callable, optional): Where restarts are reported.

    Raises:
        ValueError: If the job ran with another config (naming the
            differences) and ``restart`` is off.
    """
    sha = config_digest(config)
    path = osp.join(work_dir, JOB_FILE)
    if osp.isdir(work_dir) and os.listdir(work_dir):
        if not osp.isfile(path):
            reason = ('it records no config (run by an older vpt_mm), so it '
                      'cannot be checked')
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
        if not restart:
            raise ValueError(
                f'Job {work_dir} cannot be reused: {reason}. Revert the '
                'change, use another --work-dir, or --restart to rerun the '
                'changed jobs')
        if dry_run:
            print(f'# would restart {work_dir}: {reason}')
            return
        if log is not None:
            log(f'restart {work_dir}: {reason}')
        shutil.rmtree(work_dir)
    if not dry_run:
        os.makedirs(work_dir, exist_ok=True)
        write_json(dict(config_sha256=sha, config=config), path)


def job_result(job: Job, keep_checkpoints: bool = False) -> dict:
    """The result a finished job left, its checkpoints deleted unless
    ``keep_checkpoints``.

    Returns:
        dict: ``dict(top1=...)``, or ``dict(top1=None, diverged={iter,
        epoch, loss, lr})`` for a run stopped by a non-finite loss.

    Raises:
        RuntimeError: If the job is not finished (it failed), naming its
            command and log.
    """
    metrics_file = osp.join(job.work_dir, METRICS_FILE)
    diverged_file = osp.join(job.work_dir, DIVERGED_FILE)
    if not job.finished:
        log = osp.join(job.work_dir, LOG_FILE)
        raise RuntimeError(
            f'Job {job.work_dir} failed: no {METRICS_FILE} and no '
            f'{DIVERGED_FILE}' + (f'; its output is in {log}'
                                  if osp.isfile(log) else '') +
            f'; command: {" ".join(job.command)}')
    if not keep_checkpoints:
        for ckpt in glob.glob(osp.join(job.work_dir, '*.pth')) + glob.glob(
                osp.join(job.work_dir, 'last_checkpoint')):
            os.remove(ckpt)
    if osp.isfile(diverged_file):
        with open(diverged_file) as f:
            return dict(top1=None, diverged=json.load(f))
    with open(metrics_file) as f:
        metrics = json.load(f)
    if METRIC not in metrics:
        raise KeyError(f'{metrics_file} has no {METRIC!r}: {metrics}')
    return dict(top1=float(metrics[METRIC]))
