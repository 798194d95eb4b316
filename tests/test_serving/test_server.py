"""tools/serve.py for real, on the loopback interface: 8 concurrent clients
x 50 requests over 4 tasks of different prompt lengths, each answer equal
to the offline inferencer's; task files added, replaced and removed under
load; every bad input answered with a status and a message; two replicas.
Every server started here is stopped (SIGINT, then the process group)."""
import base64
import io
import os
import os.path as osp
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.test_serving.fixtures import make_setup, tuned_file, write_images
from tests.test_tools.test_train import REPO

pytestmark = pytest.mark.slow
requests = pytest.importorskip('requests')

CLIENTS, PER_CLIENT = 8, 50
#: Bound on starting the server (Ray, the replicas, the tasks).
START_TIMEOUT = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Server:
    """``tools/serve.py`` in its own process group, stopped on exit."""

    def __init__(self, cfg, tasks_dir, log, *args):
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.log = open(log, 'w')
        self.proc = subprocess.Popen(
            [sys.executable, 'tools/serve.py', cfg, '--tasks-dir',
             str(tasks_dir), '--port', str(self.port), '--host', '127.0.0.1',
             '--scan-interval', '0.2', *args],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=REPO, RAY_AUTH_MODE='disabled'),
            start_new_session=True)
        deadline = time.time() + START_TIMEOUT
        while time.time() < deadline:
            assert self.proc.poll() is None, self.tail()
            # serve.run returns (and the tool says so) once every
            # replica is ready.
            if 'ready at' in self.tail():
                try:
                    if requests.get(self.url + '/healthz', timeout=2).ok:
                        return
                except requests.RequestException:
                    pass
            time.sleep(1)
        self.stop()
        raise AssertionError(f'server not up in {START_TIMEOUT} s:\n'
                             + self.tail())

    def tail(self) -> str:
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()

    def predict(self, image_path, tasks, timeout=60):
        with open(image_path, 'rb') as f:
            return requests.post(
                self.url + '/v1/predict', timeout=timeout,
                files=dict(image=(osp.basename(image_path), f)),
                data=dict(tasks=','.join(tasks)))


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('server')
    cfg = make_setup(str(tmp))
    files = dict(
        p1=tuned_file(cfg, str(tmp / 'p1.safetensors'), 1, num_tokens=1),
        p3=tuned_file(cfg, str(tmp / 'p3.safetensors'), 2, num_tokens=3),
        p6=tuned_file(cfg, str(tmp / 'p6.safetensors'), 3, num_tokens=6),
        s2=tuned_file(cfg, str(tmp / 's2.safetensors'), 4, num_tokens=2,
                      deep=False),
        p3b=tuned_file(cfg, str(tmp / 'p3b.safetensors'), 5, num_tokens=3),
        extra=tuned_file(cfg, str(tmp / 'extra.safetensors'), 6))
    images = write_images(str(tmp / 'images'), 6)
    from vpt_mm.apis import VPTInferencer
    offline = VPTInferencer(cfg, files)
    expected = offline.probabilities(images)
    return tmp, cfg, files, images, expected


def test_server_under_load(setup, tmp_path):
    tmp, cfg, files, images, expected = setup
    tasks = tmp_path / 'tasks'
    tasks.mkdir()
    for name in ('p1', 'p3', 'p6', 's2', 'extra'):
        shutil.copy(files[name], tasks / f'{name}.safetensors')
    server = Server(cfg, tasks, tmp_path / 'serve.log',
                    '--max-batch-size', '16', '--batch-wait-ms', '20')
    try:
        listed = requests.get(server.url + '/v1/tasks', timeout=10).json()
        assert sorted(t['name'] for t in listed['tasks']) == [
            'extra', 'p1', 'p3', 'p6', 's2']
        assert {t['name']: t['num_tokens'] for t in listed['tasks']}['p6'] \
            == 6
        from vpt_mm.integrity import file_sha256
        sha = {n: file_sha256(p) for n, p in files.items()}
        names = ['p1', 'p3', 'p6', 's2']
        failures, answered = [], []
        lock = threading.Lock()

        def client(k):
            rng = np.random.RandomState(k)
            for r in range(PER_CLIENT):
                i = int(rng.randint(len(images)))
                ask = [names[j] for j in sorted(rng.choice(
                    4, rng.randint(1, 3), replace=False))]
                resp = server.predict(images[i], ask)
                if resp.status_code != 200:
                    with lock:
                        failures.append((k, r, resp.status_code, resp.text))
                    continue
                got = resp.json()['results']
                with lock:
                    answered.append((k, r))
                    for name in ask:
                        row = got[name]
                        # p3 is replaced under load: either file, each
                        # answer equal to its own file's offline scores.
                        ref = {sha['p3']: 'p3', sha['p3b']: 'p3b'}.get(
                            row['sha256'], name) if name == 'p3' else name
                        if row['sha256'] != sha[ref] or np.abs(
                                np.array(row['pred_scores'])
                                - expected[ref][i].numpy()).max() > 1e-5:
                            failures.append((k, r, name, row))

        def churn():
            """Mid-load: a task added, one replaced, one removed."""
            time.sleep(1.0)
            shutil.copy(files['p1'], tasks / 'added.safetensors')
            shutil.copy(files['p3b'], tasks / 'p3.tmp')
            os.replace(tasks / 'p3.tmp', tasks / 'p3.safetensors')
            (tasks / 'extra.safetensors').unlink()

        with ThreadPoolExecutor(CLIENTS + 1) as pool:
            jobs = [pool.submit(client, k) for k in range(CLIENTS)]
            pool.submit(churn).result(timeout=120)
            for job in jobs:
                job.result(timeout=900)
        assert not failures, failures[:5]
        # No request lost or answered twice.
        assert sorted(answered) == [(k, r) for k in range(CLIENTS)
                                    for r in range(PER_CLIENT)]
        time.sleep(1.0)
        listed = requests.get(server.url + '/v1/tasks', timeout=10).json()
        by_name = {t['name']: t for t in listed['tasks']}
        assert sorted(by_name) == ['added', 'p1', 'p3', 'p6', 's2']
        assert by_name['p3']['sha256'] == sha['p3b']
        metrics = requests.get(server.url + '/metrics', timeout=10).text
        mixed = next(float(line.split()[1]) for line in metrics.splitlines()
                     if line.startswith('vpt_mixed_batches_total '))
        assert mixed > 0, metrics
        total = sum(float(line.rsplit(' ', 1)[1])
                    for line in metrics.splitlines()
                    if line.startswith('vpt_requests_total{'))
        assert total >= CLIENTS * PER_CLIENT
        check_bad_inputs(server, images[0])
    except BaseException:
        print(server.tail())
        raise
    finally:
        server.stop()


def check_bad_inputs(server, image):
    """Each bad request gets its status and a message naming the problem;
    the next request is served normally."""
    url = server.url + '/v1/predict'
    with open(image, 'rb') as f:
        good = f.read()
    nan = np.zeros((8, 8, 3), np.float32)
    nan[0, 0, 0] = np.nan
    buf = io.BytesIO()
    np.save(buf, nan)
    cases = [
        (dict(files=dict(image=('a.jpg', good)), data=dict(tasks='nope')),
         404, "Unknown task(s) ['nope']; loaded: "),
        (dict(files=dict(image=('a.jpg', b'')), data=dict(tasks='p1')),
         400, 'The image is empty'),
        (dict(files=dict(image=('a.jpg', b'not an image')),
              data=dict(tasks='p1')), 400, 'cannot be decoded as an image'),
        (dict(files=dict(image=('a.npy', buf.getvalue())),
              data=dict(tasks='p1')), 400, 'non-finite pixel values'),
        (dict(files=dict(image=('a.jpg', b'x' * (21 * 2**20))),
              data=dict(tasks='p1')), 413, 'the limit is'),
        (dict(data=b'{"image": ', headers={
            'content-type': 'application/json'}), 400, 'not valid JSON'),
        (dict(json=dict(image='%%%', tasks=['p1'])), 400,
         'not valid base64'),
        (dict(json=dict(image=base64.b64encode(good).decode())), 400,
         'names no task'),
        (dict(data=b'abc', headers={'content-type': 'text/plain'}), 415,
         'multipart/form-data or application/json'),
    ]
    for kwargs, status, message in cases:
        resp = requests.post(url, timeout=60, **kwargs)
        assert resp.status_code == status, (status, resp.text)
        assert message in resp.json()['error'], resp.text
        assert server.predict(image, ['p1']).status_code == 200
    # A client that disconnects mid-request (the body never arrives).
    with socket.create_connection(('127.0.0.1', server.port)) as s:
        s.sendall(b'POST /v1/predict HTTP/1.1\r\nHost: x\r\n'
                  b'Content-Type: application/json\r\n'
                  b'Content-Length: 100000\r\n\r\n{"image": "')
    resp = requests.post(url, timeout=60, json=dict(
        image=base64.b64encode(good).decode(), tasks=['p1', 's2']))
    assert resp.status_code == 200 and set(resp.json()['results']) == {
        'p1', 's2'}
    assert requests.get(server.url + '/healthz', timeout=10).ok


def test_two_replicas(setup, tmp_path):
    tmp, cfg, files, images, expected = setup
    tasks = tmp_path / 'tasks'
    tasks.mkdir()
    shutil.copy(files['p6'], tasks / 'p6.safetensors')
    server = Server(cfg, tasks, tmp_path / 'serve.log', '--replicas', '2',
                    '--cpus-per-replica', '0.5')
    try:
        # Ray's proxy picks the less busy of two replicas, so concurrent
        # requests reach both (bounded: 20 rounds of 8).
        replicas = set()
        with ThreadPoolExecutor(8) as pool:
            for _ in range(20):
                replicas |= set(pool.map(lambda _: requests.get(
                    server.url + '/healthz', timeout=10).json()['replica'],
                    range(8)))
                if len(replicas) == 2:
                    break
        assert len(replicas) == 2, replicas
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(
                lambda i: server.predict(images[i % 6], ['p6']), range(16)))
        for i, resp in enumerate(answers):
            assert resp.status_code == 200, resp.text
            scores = resp.json()['results']['p6']['pred_scores']
            assert np.abs(np.array(scores)
                          - expected['p6'][i % 6].numpy()).max() <= 1e-5
    except BaseException:
        print(server.tail())
        raise
    finally:
        server.stop()
