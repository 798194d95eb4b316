"""A real single-node SLURM cluster for the tests: Debian's ``slurm-wlm``
and ``munge`` (``.ci/run`` installs them), started in a temporary folder.

Without the packages (or root) the tests that need it are skipped, unless
``VPT_MM_REQUIRE_SLURM=1`` (set by ``.ci/run``) turns that into a failure.
"""
from __future__ import annotations

import os
import os.path as osp
import shutil
import socket
import subprocess
import time
from typing import Dict, Iterator

import pytest

DAEMONS = ('munged', 'slurmctld', 'slurmd', 'sbatch', 'srun', 'sinfo')


def _which(name: str) -> str:
    for folder in ('/usr/sbin', '/usr/bin', '/sbin'):
        if osp.isfile(osp.join(folder, name)):
            return osp.join(folder, name)
    return shutil.which(name) or ''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('', 0))
        return s.getsockname()[1]


def unavailable() -> str:
    """Why no cluster can be started here ('' if it can)."""
    missing = [d for d in DAEMONS if not _which(d)]
    if missing:
        return f'SLURM / munge not installed ({missing})'
    if os.geteuid() != 0:
        return 'starting slurmd and munged needs root'
    return ''


def start_cluster(root: str) -> Iterator[Dict[str, str]]:
    """Start munged (if not running), slurmctld and slurmd with a config
    under ``root``; yield the environment that points clients at it; stop
    the daemons afterwards."""
    reason = unavailable()
    if reason:
        if os.environ.get('VPT_MM_REQUIRE_SLURM') == '1':
            pytest.fail(f'VPT_MM_REQUIRE_SLURM=1 but {reason}')
        pytest.skip(reason)
    host = socket.gethostname().split('.')[0]
    for sub in ('state', 'spool', 'log'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    conf = osp.join(root, 'slurm.conf')
    with open(conf, 'w') as f:
        f.write(f"""ClusterName=vptmmtest
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    if subprocess.run(['pgrep', '-x', 'munged'],
                      capture_output=True).returncode != 0:
        os.makedirs('/run/munge', exist_ok=True)
        shutil.chown('/run/munge', 'munge', 'munge')
        subprocess.run(['runuser', '-u', 'munge', '--', _which('munged')],
                       check=True)
    env = dict(os.environ, SLURM_CONF=conf)
    daemons = []
    for daemon in ('slurmctld', 'slurmd'):
        subprocess.run([_which(daemon), '-f', conf], check=True, env=env)
        daemons.append(osp.join(root, f'{daemon}.pid'))
    deadline = time.time() + 60
    while True:
        out = subprocess.run(['sinfo', '-h', '-o', '%T'], env=env,
                             capture_output=True, text=True).stdout
        if 'idle' in out:
            break
        if time.time() > deadline:
            logs = ''.join(open(osp.join(root, 'log', n)).read()[-2000:]
                           for n in os.listdir(osp.join(root, 'log')))
            pytest.fail(f'the SLURM node did not come up: {out!r}\n{logs}')
        time.sleep(0.5)
    try:
        yield {'SLURM_CONF': conf}
    finally:
        subprocess.run(['scancel', '--user', 'root'], env=env,
                       capture_output=True)
        for pid_file in reversed(daemons):
            if osp.isfile(pid_file):
                with open(pid_file) as f:
                    pid = int(f.read().strip())
                try:
                    os.kill(pid, 15)
                except ProcessLookupError:
                    pass
