"""A tiny sweep run one job at a time, several at once, and through a real
single-node SLURM cluster: the same scores, choices and tables, bit for
bit; tools/slurm_train.sh trains through srun."""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from tests.slurm_cluster import start_cluster
from tests.test_tools.test_benchmarks import bench  # noqa: F401
from tests.test_tools.test_train import REPO, write_config

pytestmark = pytest.mark.slow
OUTPUTS = ('records.json', 'hparams.json', 'results.md', 'hparams.md',
           osp.join('dmlab', 'best.json'))


def run(cmd, env=None):
    env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def sweep(config, work_dir, *args, env=None):
    return run([sys.executable, 'tools/sweep.py', config, '--tasks', 'dmlab',
                '--lrs', '1', '0.5', '--wds', '0', '--seeds', '2',
                '--work-dir', work_dir, '--method', 'VPT-Deep', '--backbone',
                'tiny', *args], env)


def outputs(work_dir):
    found = {}
    for name in OUTPUTS:
        with open(osp.join(work_dir, name)) as f:
            found[name] = f.read()
    return found


@pytest.fixture(scope='module')
def sequential(bench, tmp_path_factory):  # noqa: F811
    """The reference: the sweep run one job after another, one thread per
    job (as the concurrent and SLURM runs below: the thread count changes
    float rounding)."""
    _, configs = bench
    work = str(tmp_path_factory.mktemp('sequential') / 'sweep')
    log = sweep(configs['vtab'], work, '--threads-per-job', '1')
    assert log.count('[sweep] run ') == 4
    return configs['vtab'], outputs(work)


def test_concurrent_jobs_give_the_same_sweep(sequential, tmp_path):
    config, expected = sequential
    work = str(tmp_path / 'sweep')
    log = sweep(config, work, '--jobs', '2', '--threads-per-job', '1')
    assert '(slot 1)' in log
    assert outputs(work) == expected
    assert osp.isfile(osp.join(work, 'dmlab', 'tune', 'lr1_wd0', 'job.log'))
    # GPUs are grouped per job; they must split evenly.
    out = subprocess.run(
        [sys.executable, 'tools/sweep.py', config, '--devices', '0,1,2',
         '--gpus', '2', '--dry-run'], cwd=REPO, capture_output=True,
        text=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode != 0
    assert 'cannot be split into jobs of 2 GPU(s) each' in out.stderr


@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
    yield from start_cluster(str(tmp_path_factory.mktemp('slurm')))


def test_slurm_sweep_equals_local(sequential, slurm, tmp_path):
    config, expected = sequential
    work = str(tmp_path / 'sweep')
    args = ['--launcher', 'slurm', '--partition', 'debug', '--slurm-gpus',
            '0', '--cpus-per-task', '1']
    log = sweep(config, work, *args, env=slurm)
    assert log.count('submit ') == 2  # the grid, then the final seeds
    assert 'Submitted batch job' in log
    assert outputs(work) == expected
    with open(osp.join(work, 'slurm', 'stage0.sh')) as f:
        script = f.read()
    assert '#SBATCH --array=0-1' in script and '--partition=debug' in script
    # Restarted: nothing is submitted again; the recorded configs hold.
    log = sweep(config, work, *args, env=slurm)
    assert 'submit ' not in log and log.count('[sweep] done') == 4
    job = json.load(open(osp.join(work, 'dmlab', 'final', 'seed1',
                                  'job.json')))
    assert job['config']['randomness.seed'] == 1


def test_slurm_train_two_tasks(slurm, tmp_path):
    """tools/slurm_train.sh on a CPU partition: srun starts 2 processes,
    which train together (gloo) from SLURM's environment."""
    cfg = write_config(
        tmp_path, epochs=1,
        extra="custom_imports = dict(imports=['vpt_mm', "
        "'tests.test_tools.dump_prompts_hook'], allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='DumpPromptsHook')]\n")
    work = str(tmp_path / 'work')
    env = dict(slurm, GPUS='2', GPUS_PER_NODE='0', CPUS_PER_TASK='1',
               PORT='29731')
    log = run(['bash', 'tools/slurm_train.sh', 'debug', 'vpt', cfg, work],
              env)
    assert 'accuracy/top1' in log and 'Distributed training: True' in log
    # One process per srun task, the same prompts on both.
    dumps = sorted(glob.glob(osp.join(work, 'prompts_rank*.pt')))
    assert [osp.basename(d) for d in dumps] == ['prompts_rank0.pt',
                                                'prompts_rank1.pt']
    assert torch.equal(torch.load(dumps[0]), torch.load(dumps[1]))
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
