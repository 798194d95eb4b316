"""Serving many tuned tasks on one frozen backbone over HTTP
(``tools/serve.py``): the watched tasks folder (:mod:`.tasks`), the
metrics (:mod:`.metrics`) and the Ray Serve application (:mod:`.app`).

:mod:`.app` imports Ray only when the server is built, so the rest of
vpt_mm never needs it.
"""
from .metrics import ServeMetrics
from .tasks import TaskFolder, TaskInfo, TaskSet

__all__ = ['ServeMetrics', 'TaskFolder', 'TaskInfo', 'TaskSet']
