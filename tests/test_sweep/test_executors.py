"""The executors on trivial jobs: where and how they run them."""
import json
import os.path as osp
import sys

import pytest

from vpt_mm.sweep import (
    ConcurrentExecutor,
    Job,
    SequentialExecutor,
    SlurmExecutor,
    device_slots,
)


def env_job(tmp_path, name):
    """A job that records its environment and the time it ran."""
    work = str(tmp_path / name)
    code = ('import json, os, sys, time; os.makedirs(sys.argv[1], '
            'exist_ok=True); t0 = time.time(); time.sleep(0.3); '
            'json.dump(dict(env={k: os.environ.get(k) for k in '
            '("CUDA_VISIBLE_DEVICES", "PORT", "OMP_NUM_THREADS")}, '
            't0=t0, t1=time.time()), open(sys.argv[1] + "/env.json", "w"))')
    return Job(name=name, work_dir=work,
               command=[sys.executable, '-c', code, work])


def read(job):
    with open(osp.join(job.work_dir, 'env.json')) as f:
        return json.load(f)


def test_device_slots():
    assert device_slots(['0', '1', '2', '3'], 2) == ['0,1', '2,3']
    assert device_slots(['4'], 1) == ['4']
    with pytest.raises(ValueError, match='cannot be split'):
        device_slots(['0', '1', '2'], 2)


def test_concurrent_executor_uses_every_slot(tmp_path):
    jobs = [env_job(tmp_path, f'j{i}') for i in range(4)]
    ConcurrentExecutor(['0,1', '2,3'], log=lambda m: None).run(jobs)
    envs = [read(j) for j in jobs]
    assert {e['env']['CUDA_VISIBLE_DEVICES'] for e in envs} == {'0,1', '2,3'}
    # Two at a time, each slot with its own dist_train.sh port.
    assert {e['env']['PORT'] for e in envs} == {'29500', '29501'}
    times = sorted((e['t0'], e['t1']) for e in envs)
    assert times[1][0] < times[0][1]  # the first two overlapped
    # ... and the others waited for a free slot.
    first_end = min(end for _, end in times[:2])
    assert all(start >= first_end - 0.05 for start, _ in times[2:])
    assert all(osp.isfile(osp.join(j.work_dir, 'job.log')) for j in jobs)


def test_cpu_slots_split_the_threads(tmp_path, monkeypatch):
    monkeypatch.setattr('os.cpu_count', lambda: 8)
    assert ConcurrentExecutor(4).threads == 2
    assert ConcurrentExecutor(16).threads == 1
    assert ConcurrentExecutor(2, threads=3).threads == 3
    job = env_job(tmp_path, 'seq')
    SequentialExecutor(lambda m: None, threads=2).run([job])
    assert read(job)['env']['OMP_NUM_THREADS'] == '2'
    with pytest.raises(ValueError, match='--jobs must be >= 1'):
        ConcurrentExecutor(0)


def test_slurm_array_script(tmp_path):
    executor = SlurmExecutor('gpu', str(tmp_path), gpus=2, cpus_per_task=8,
                             max_parallel=4, sbatch_args=['--time=1:00:00'])
    jobs = [env_job(tmp_path, f'j{i}') for i in range(3)]
    path = executor.script(jobs, 'stage0')
    text = open(path).read()
    for directive in ('--partition=gpu', '--array=0-2%4', '--ntasks=1',
                      '--cpus-per-task=8', '--gres=gpu:2'):
        assert f'#SBATCH {directive}' in text
    assert 'export OMP_NUM_THREADS=8' in text
    lines = open(osp.join(str(tmp_path), 'slurm', 'stage0.jobs')).read()
    assert len(lines.splitlines()) == 3
    assert osp.join(jobs[2].work_dir, 'job.log') in lines.splitlines()[2]
    with pytest.raises(ValueError, match='needs --partition'):
        SlurmExecutor('', str(tmp_path))
