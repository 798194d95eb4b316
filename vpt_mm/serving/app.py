"""The inference server: many tuned tasks on one frozen backbone, on Ray
Serve (``tools/serve.py``).

Ray Serve does the serving: HTTP (a FastAPI ingress, with its OpenAPI page
at ``/docs``), dynamic batching (``@serve.batch``), replicas on one machine
or across a Ray cluster. What this module adds is the VPT part: requests of
any tasks that arrive within the batch window are classified in one forward
of the shared backbone (:class:`~vpt_mm.apis.MultiTaskClassifier`), the
tasks come from a folder that is watched (:class:`~vpt_mm.serving.TaskFolder`),
and every bad input gets an HTTP status and a message naming the problem,
never a number.

Endpoints:

- ``POST /v1/predict``: a multipart upload (``image`` file, ``tasks`` as
  ``a,b`` or repeated ``task`` fields) or JSON (``{"image": base64,
  "tasks": [...]}``); per task ``pred_label``, ``pred_class``,
  ``pred_scores`` (as ``tools/infer.py`` writes them) and the task file's
  ``sha256``.
- ``GET /v1/tasks``: the loaded tasks and the rejected files with reasons.
- ``GET /healthz``; ``GET /metrics`` (Prometheus text).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import ray
import torch
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve
from starlette.requests import ClientDisconnect, Request

__all__ = ['VPTServer', 'build_app', 'start_server', 'ServeOptions',
           'METRICS_ACTOR']

#: The name of the named Ray actor holding the deployment's metrics.
METRICS_ACTOR = 'vpt_mm_serve_metrics'
#: Its Ray namespace (the replicas run in Serve's own).
METRICS_NAMESPACE = 'vpt_mm'
_ALIVE: dict = {}


class Refusal(Exception):
    """A request answered with an HTTP error and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ServeOptions(dict):
    """The server's options (``tools/serve.py``'s arguments), a plain dict
    so that Ray can ship it to every replica.

    Keys: ``config``, ``cfg_options`` (dict), ``tasks_dir``, ``device``,
    ``max_batch_size``, ``batch_wait_ms``, ``max_image_bytes``,
    ``max_pixels``, ``scan_interval_s``, ``threads``.
    """

    DEFAULTS = dict(cfg_options=None, device='cpu', max_batch_size=32,
                    batch_wait_ms=5.0, max_image_bytes=20 * 2**20,
                    max_pixels=40_000_000, scan_interval_s=1.0, threads=0)

    def __init__(self, **kwargs) -> None:
        unknown = set(kwargs) - set(self.DEFAULTS) - {'config', 'tasks_dir'}
        if unknown:
            raise TypeError(f'Unknown server option(s) {sorted(unknown)}')
        for key in ('config', 'tasks_dir'):
            if key not in kwargs:
                raise TypeError(f'The server needs {key!r}')
        super().__init__({**self.DEFAULTS, **kwargs})
        if self['max_batch_size'] < 1:
            raise ValueError('max_batch_size must be >= 1, got '
                             f'{self["max_batch_size"]}')
        if self['batch_wait_ms'] < 0:
            raise ValueError('batch_wait_ms must be >= 0, got '
                             f'{self["batch_wait_ms"]}')


def _tasks_of(value) -> List[str]:
    """Task names from a JSON value or a form field (``a,b``)."""
    if value is None or value == []:
        raise Refusal(400, 'The request names no task ("tasks")')
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(
            isinstance(v, str) for v in value):
        raise Refusal(400, '"tasks" must be a task name or a list of task '
                      'names')
    names = [n.strip() for v in value for n in v.split(',') if n.strip()]
    if not names:
        raise Refusal(400, 'The request names no task ("tasks")')
    return list(dict.fromkeys(names))


class Replica:
    """What one replica does: the backbone, the tasks of the folder, the
    forward of a batch, the HTTP routes. The Ray deployment
    (:data:`VPTServer`) holds one and adds the batching."""

    def __init__(self, options: dict) -> None:
        import vpt_mm  # noqa: F401  (registration, environment fixes)
        from vpt_mm.apis import ImageReader
        from vpt_mm.config import resolve_config
        from vpt_mm.serving.tasks import TaskFolder
        if options['threads']:
            torch.set_num_threads(int(options['threads']))
        self.options = options
        cfg = resolve_config(options['config'], options['cfg_options'])
        self.folder = TaskFolder(cfg, options['tasks_dir'],
                                 options['device'])
        self.folder.refresh()
        self.reader = ImageReader(cfg)
        self.preprocessor = self.folder.base.data_preprocessor
        self.classify = None  # the deployment's batched method
        self.metrics_store = ray.get_actor(METRICS_ACTOR,
                                           namespace=METRICS_NAMESPACE)
        self._stop = threading.Event()
        self._scanner = threading.Thread(target=self._scan, daemon=True)
        self._scanner.start()

    def _scan(self) -> None:
        """Watch the folder; a failed scan is retried next time."""
        while not self._stop.wait(self.options['scan_interval_s']):
            try:
                self.folder.refresh()
            except Exception as err:  # noqa: BLE001
                print(f'[vpt_mm serve] scanning the tasks folder '
                      f'failed: {err}', flush=True)

    def __del__(self) -> None:
        self._stop.set()

    def _record(self, *event) -> None:
        self.metrics_store.merge.remote([event])

    # Batching -------------------------------------------------------

    def forward(self, items: Sequence[tuple]) -> List[dict]:
        """One forward for every (snapshot, input, task) of a batch."""
        out: List[Optional[dict]] = [None] * len(items)
        groups: Dict[int, List[int]] = {}
        for i, (snapshot, _, _) in enumerate(items):
            groups.setdefault(id(snapshot), []).append(i)
        for idxs in groups.values():
            snapshot = items[idxs[0]][0]
            inputs = [items[i][1] for i in idxs]
            batch = self.preprocessor(
                dict(inputs=inputs, data_samples=None), False)['inputs']
            tasks = [snapshot.index(items[i][2]) for i in idxs]
            scores = snapshot.classifier(batch, tasks)
            self._record('batch', len(idxs), len(set(tasks)))
            for i, row in zip(idxs, scores):
                name = items[i][2]
                info = snapshot.tasks[name]
                row = row.float().cpu()
                if not bool(torch.isfinite(row).all()):
                    out[i] = dict(error=f'Task {name!r} gave non-finite '
                                  'scores for this image')
                    continue
                label = int(row.argmax())
                out[i] = dict(pred_label=label,
                              pred_class=info.classes[label],
                              pred_scores=row.tolist(),
                              sha256=info.sha256)
        return out

    # Requests -------------------------------------------------------

    async def _body(self, request: Request) -> bytes:
        limit = self.options['max_image_bytes']
        length = request.headers.get('content-length')
        if length is not None and length.isdigit() and \
                int(length) > limit + 65536:
            raise Refusal(413, f'The request has {int(length)} bytes; '
                          f'the limit is {limit} for the image')
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit + 65536:
                raise Refusal(413, f'The request is over the limit of '
                              f'{limit} bytes for the image')
            chunks.append(chunk)
        return b''.join(chunks)

    async def _parse(self, request: Request) -> Tuple[bytes, List[str]]:
        body = await self._body(request)
        kind = request.headers.get('content-type', '').split(';')[0]
        kind = kind.strip().lower()
        if kind == 'application/json':
            try:
                data = json.loads(body)
            except ValueError as err:
                raise Refusal(400, f'The body is not valid JSON: '
                              f'{err}') from err
            if not isinstance(data, dict) or 'image' not in data:
                raise Refusal(400, 'A JSON request is {"image": '
                              '<base64>, "tasks": [...]}')
            tasks = _tasks_of(data.get('tasks', data.get('task')))
            if not isinstance(data['image'], str):
                raise Refusal(400, '"image" must be a base64 string')
            try:
                image = base64.b64decode(data['image'], validate=True)
            except (binascii.Error, ValueError) as err:
                raise Refusal(400, f'"image" is not valid base64: '
                              f'{err}') from err
        elif kind == 'multipart/form-data':
            request._body = body  # starlette parses the form from it
            try:
                form = await request.form()
            except Exception as err:  # noqa: BLE001
                raise Refusal(400, f'The multipart body cannot be '
                              f'parsed: {err}') from err
            upload = form.get('image')
            if upload is None or isinstance(upload, str):
                raise Refusal(400, 'A multipart request needs an '
                              '"image" file field')
            values = form.getlist('tasks') + form.getlist('task')
            tasks = _tasks_of([str(v) for v in values])
            image = await upload.read()
        else:
            raise Refusal(415, f'Content type {kind!r}: send '
                          'multipart/form-data or application/json')
        if len(image) > self.options['max_image_bytes']:
            raise Refusal(413, f'The image has {len(image)} bytes; the '
                          f'limit is {self.options["max_image_bytes"]}')
        return image, tasks

    def _decode(self, image: bytes) -> dict:
        try:
            array = self.reader.decode(image, 'The image')
        except ValueError as err:
            raise Refusal(400, str(err)) from err
        pixels = int(array.shape[0]) * int(array.shape[1]) \
            if array.ndim >= 2 else 0
        if pixels > self.options['max_pixels']:
            raise Refusal(413, f'The image has {pixels} pixels; the '
                          f'limit is {self.options["max_pixels"]}')
        try:
            return self.reader.prepare(array)
        except ValueError as err:
            message = str(err).replace('input array 0', 'The image')
            raise Refusal(400, message) from err

    async def predict(self, request: Request):
        """Classify one image with one or more tasks."""
        start = time.perf_counter()
        tasks: List[str] = []
        try:
            image, tasks = await self._parse(request)
            snapshot = self.folder.current
            unknown = [t for t in tasks if t not in snapshot.tasks]
            if unknown:
                raise Refusal(404, f'Unknown task(s) {unknown}; loaded: '
                              f'{sorted(snapshot.tasks)}')
            data = await asyncio.to_thread(self._decode, image)
            rows = await asyncio.gather(*[
                self.classify((snapshot, data['inputs'], t))
                for t in tasks])
            bad = [r['error'] for r in rows if 'error' in r]
            if bad:
                raise Refusal(500, bad[0])
        except Refusal as err:
            self._record('error', tasks, err.status)
            return JSONResponse(dict(error=err.message),
                                status_code=err.status)
        except ClientDisconnect:
            self._record('error', tasks, 499)
            return JSONResponse(dict(error='client disconnected'),
                                status_code=499)
        self._record('request', tasks, time.perf_counter() - start)
        return dict(results=dict(zip(tasks, rows)))

    async def tasks(self):
        """The loaded tasks and the rejected files."""
        snapshot = self.folder.current
        return dict(
            version=snapshot.version,
            backbone_fingerprint=self.folder.fingerprint,
            tasks=[i.as_dict() for i in snapshot.tasks.values()],
            rejected=[dict(file=f, reason=r)
                      for f, r in sorted(snapshot.rejected.items())])

    async def healthz(self):
        """Liveness: the replica answers, and how many tasks it has."""
        ctx = serve.get_replica_context()
        replica = getattr(ctx.replica_id, 'unique_id', str(ctx.replica_id))
        return dict(status='ok', tasks=len(self.folder.current.tasks),
                    replica=replica)

    async def metrics(self):
        """Prometheus text of the whole deployment."""
        text = await self.metrics_store.render.remote()
        return PlainTextResponse(text, media_type='text/plain; '
                                 'version=0.0.4')

    def build_api(self, classify):
        """The FastAPI app of this replica, its predictions batched by
        ``classify`` (FastAPI also serves the OpenAPI page at
        ``/docs``)."""
        self.classify = classify
        from fastapi import FastAPI
        api = FastAPI(
            title='vpt_mm server',
            description='Many tuned VPT tasks on one frozen backbone; '
            'requests of different tasks are batched into one forward.',
            version=__import__('vpt_mm').__version__)

        @api.post('/v1/predict')
        async def predict(request: Request):
            """Classify one image with one or more tasks: multipart
            (``image`` file, ``tasks=a,b``) or JSON (``{"image":
            base64, "tasks": [...]}``)."""
            return await self.predict(request)

        @api.get('/v1/tasks')
        async def tasks():
            """The loaded tasks and the rejected files."""
            return await self.tasks()

        @api.get('/healthz')
        async def healthz():
            """Liveness and the number of loaded tasks."""
            return await self.healthz()

        @api.get('/metrics')
        async def metrics():
            """Prometheus text of the whole deployment."""
            return await self.metrics()

        return api



@serve.deployment
@serve.ingress()
class VPTServer:
    """The Ray Serve deployment: one :class:`Replica` per replica, its
    predictions batched by ``@serve.batch`` (Ray pickles this class by
    value, so it stays thin)."""

    def __init__(self, options: dict) -> None:
        self.replica = Replica(options)
        self.classify.set_max_batch_size(options['max_batch_size'])
        self.classify.set_batch_wait_timeout_s(
            options['batch_wait_ms'] / 1000)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def classify(self, items: List[tuple]) -> List[dict]:
        """Requests' (snapshot, input, task) items, one forward."""
        return await asyncio.to_thread(self.replica.forward, items)

    def __serve_build_asgi_app__(self):
        return self.replica.build_api(self.classify)


def build_app(options: ServeOptions, num_replicas: int = 1,
              num_cpus: float = 1, num_gpus: float = 0):
    """The Ray Serve application of the server.

    Args:
        options (ServeOptions): The server's options.
        num_replicas (int): Replicas (Ray actors, on any node of the
            cluster), each with its own copy of the backbone and tasks.
        num_cpus (float): CPUs Ray reserves per replica.
        num_gpus (float): GPUs Ray reserves per replica.

    Returns:
        The bound application, for ``serve.run``.
    """
    return VPTServer.options(
        num_replicas=num_replicas,
        max_ongoing_requests=max(64, 4 * options['max_batch_size']),
        ray_actor_options=dict(num_cpus=num_cpus, num_gpus=num_gpus),
    ).bind(dict(options))


def start_server(options: ServeOptions, host: str = '127.0.0.1',
                 port: int = 8000, num_replicas: int = 1,
                 address: Optional[str] = None,
                 num_cpus: Optional[float] = None) -> None:
    """Start Ray (or join the cluster at ``address``), the metrics actor
    and the application; returns once every replica is ready.

    Args:
        options (ServeOptions): The server's options.
        host (str): Interface of the HTTP proxy.
        port (int): Its port.
        num_replicas (int): Replicas of the deployment.
        address (str, optional): A running Ray cluster (``auto`` or
            ``ray://host:10001``); a local Ray is started without it.
        num_cpus (float, optional): CPUs per replica; by default the
            machine's cores divided among the replicas (local Ray) or 1.
    """
    import os

    import ray
    from ray import serve

    from .metrics import ServeMetrics
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    if num_cpus is None:
        num_cpus = 1 if address else max(
            0.5, (os.cpu_count() or 1) / num_replicas)
    if not options['threads']:
        options['threads'] = max(1, int(num_cpus))
    # The handle keeps the actor alive as long as this process runs.
    _ALIVE['metrics'] = ray.remote(ServeMetrics).options(
        name=METRICS_ACTOR, namespace=METRICS_NAMESPACE, num_cpus=0,
        get_if_exists=True).remote()
    serve.start(http_options=dict(host=host, port=port))
    gpus = 1 if str(options['device']).startswith('cuda') else 0
    serve.run(build_app(options, num_replicas, num_cpus, gpus),
              name='vpt_mm', route_prefix='/')
