"""Throughput and latency of tools/serve.py against the offline
MultiTaskClassifier at the same batch size, for 1, 4 and 16 tasks mixed.

Everything is generated: a random stand-in for the config's pretrained
checkpoint, N tuned-only files with random prompts and heads (one prompt
length), random JPEGs. The server (a real ``tools/serve.py`` on the
loopback interface) gets concurrent single-task requests, each for a task
drawn at random among the first N; the offline run classifies the same
number of images, already decoded, in batches of ``--batch-size`` of
randomly mixed tasks. Both run on this machine's cores, one after the
other. Also printed: the memory each task adds, its tuned tensors (the
frozen backbone is shared).

Example:
    python tools/analysis_tools/benchmark_serve.py \
        configs/vtab/vpt_deep_vit-b.py --tasks 1 4 16 --batch-size 16
"""
import argparse
import os
import os.path as osp
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List

import numpy as np

import vpt_mm  # noqa: F401  (compatibility fixes first, registration)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def make_files(config: str, cfg_options: dict, out: str, num_tasks: int,
               num_images: int, size: int) -> tuple:
    """The stand-in checkpoint, the tuned files and the images; returns
    (config options pointing at the stand-in, task files, image paths)."""
    import torch
    from mmpretrain.registry import MODELS
    from PIL import Image

    from vpt_mm.checkpoints import save_tuned
    from vpt_mm.config import config_from_file
    from vpt_mm.converters import (
        save_backbone_checkpoint,
        standin_backbone_state,
    )
    cfg = config_from_file(config, cfg_options)
    standin = osp.join(out, 'standin.pth')
    save_backbone_checkpoint(standin_backbone_state(cfg, 0), standin,
                             'random stand-in, seed 0')
    options = dict(cfg_options or {})
    options['model.backbone.init_cfg.checkpoint'] = standin
    cfg = config_from_file(config, options)
    model = MODELS.build(cfg.model)
    model.init_weights()
    tasks_dir = osp.join(out, 'tasks')
    os.makedirs(tasks_dir)
    files = []
    for k in range(num_tasks):
        torch.manual_seed(k)
        with torch.no_grad():
            for param in model.parameters():
                if param.requires_grad:
                    param.normal_(0, 0.02)
        path = osp.join(tasks_dir, f'task{k:02d}.safetensors')
        save_tuned(model, path)
        files.append(path)
    rng = np.random.RandomState(0)
    images = []
    for i in range(num_images):
        path = osp.join(out, f'img{i}.jpg')
        Image.fromarray(rng.randint(0, 256, (size, size, 3),
                                    dtype=np.uint8)).save(path)
        images.append(path)
    return options, tasks_dir, files, images


def offline_run(folder, reader, images: List[str], num_tasks: int,
                total: int, batch_size: int) -> float:
    """Seconds to classify ``total`` decoded images in mixed batches."""
    import torch
    snap = folder.current
    inputs = [reader.prepare(p)['inputs'] for p in images]
    rng = np.random.RandomState(1)
    names = sorted(snap.tasks)[:num_tasks]
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, total, batch_size):
            n = min(batch_size, total - first)
            picks = rng.randint(len(inputs), size=n)
            batch = folder.base.data_preprocessor(
                dict(inputs=[inputs[i] for i in picks]), False)['inputs']
            tasks = [snap.index(names[t]) for t in
                     rng.randint(num_tasks, size=n)]
            snap.classifier(batch, tasks)
    return time.perf_counter() - start


def server_run(url: str, images: List[str], names: List[str], total: int,
               clients: int) -> tuple:
    """(seconds, latencies) of ``total`` single-task requests from
    ``clients`` concurrent clients."""
    import requests
    blobs = [open(p, 'rb').read() for p in images]
    rng = np.random.RandomState(2)
    plan = [(int(rng.randint(len(blobs))), names[int(rng.randint(
        len(names)))]) for _ in range(total)]

    def one(item):
        i, task = item
        t0 = time.perf_counter()
        resp = requests.post(url + '/v1/predict', timeout=600,
                             files=dict(image=('x.jpg', blobs[i])),
                             data=dict(tasks=task))
        if resp.status_code != 200:
            raise RuntimeError(f'{resp.status_code}: {resp.text}')
        return time.perf_counter() - t0

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, plan))
    return time.perf_counter() - start, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='?',
                        default='configs/vtab/vpt_deep_vit-b.py')
    parser.add_argument('--tasks', type=int, nargs='+', default=[1, 4, 16])
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--batch-wait-ms', type=float, default=20.0)
    parser.add_argument('--requests', type=int, default=128,
                        help='requests (and offline images) per row')
    parser.add_argument('--clients', type=int,
                        help='concurrent clients (default: 2 x batch size)')
    parser.add_argument('--image-size', type=int, default=256)
    parser.add_argument('--cfg-options', nargs='+', default=[])
    args = parser.parse_args()
    from vpt_mm.apis import ImageReader
    from vpt_mm.config import parse_cfg_options, resolve_config
    from vpt_mm.serving import TaskFolder
    clients = args.clients or 2 * args.batch_size
    out = tempfile.mkdtemp(prefix='benchmark_serve_')
    server = None
    try:
        options, tasks_dir, files, images = make_files(
            args.config, parse_cfg_options(args.cfg_options), out,
            max(args.tasks), 16, args.image_size)
        cfg = resolve_config(args.config, options)
        folder = TaskFolder(cfg, tasks_dir)
        folder.refresh()
        reader = ImageReader(cfg)
        tuned = {
            name: sum(p.numel() * p.element_size()
                      for p in model.parameters() if p.requires_grad)
            for name, model in folder._models.items()}
        port = _free_port()
        url = f'http://127.0.0.1:{port}'
        server = subprocess.Popen(
            [sys.executable, 'tools/serve.py', args.config, '--tasks-dir',
             tasks_dir, '--port', str(port), '--max-batch-size',
             str(args.batch_size), '--batch-wait-ms',
             str(args.batch_wait_ms), '--cfg-options',
             *[f'{k}={v}' for k, v in options.items()]],
            cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=REPO))
        _wait(url, server)
        names = sorted(folder.current.tasks)
        server_run(url, images, names[:1], 2 * args.batch_size, clients)
        rows = []
        for n in args.tasks:
            off = offline_run(folder, reader, images, n, args.requests,
                              args.batch_size)
            secs, lat = server_run(url, images, names[:n], args.requests,
                                   clients)
            rows.append((n, args.requests / off, args.requests / secs,
                         off / secs, np.percentile(lat, 50) * 1000,
                         np.percentile(lat, 99) * 1000))
        print(f'{args.config}, batch {args.batch_size}, {clients} clients, '
              f'{args.requests} requests per row, {os.cpu_count()} cores')
        print('| tasks | offline img/s | server req/s | server / offline | '
              'p50 ms | p99 ms |')
        print('|---|---|---|---|---|---|')
        for n, a, b, r, p50, p99 in rows:
            print(f'| {n} | {a:.2f} | {b:.2f} | {r:.2f}x | {p50:.0f} | '
                  f'{p99:.0f} |')
        sizes = sorted(set(tuned.values()))
        print(f'memory per task (tuned tensors; the frozen backbone is '
              f'shared): {", ".join(f"{s / 1024:.1f} KB" for s in sizes)}')
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(out, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _wait(url: str, proc, timeout: float = 300) -> None:
    import requests
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError('tools/serve.py exited while starting')
        try:
            if requests.get(url + '/healthz', timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise RuntimeError(f'the server did not start in {timeout} s')


if __name__ == '__main__':
    main()
