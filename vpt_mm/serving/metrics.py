"""The server's metrics in Prometheus' text format.

:class:`ServeMetrics` counts requests, errors and latency per task, and
per batch its size and how many tasks it mixed. The Ray application keeps
one in a named actor that every replica reports to, so ``GET /metrics``
answers for the whole deployment, whichever replica serves it.
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

__all__ = ['ServeMetrics', 'LATENCY_BUCKETS', 'BATCH_BUCKETS']

#: Latency histogram bounds, seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
#: Batch size and tasks-per-batch histogram bounds.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Histogram:
    """Cumulative bucket counts, sum and count, as Prometheus keeps them."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str) -> List[str]:
        out, total = [], 0
        sep = ',' if labels else ''
        for bound, num in zip(self.bounds + (float('inf'), ), self.counts):
            total += num
            le = '+Inf' if bound == float('inf') else repr(bound)
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {total}')
        tail = f'{{{labels}}}' if labels else ''
        out.append(f'{name}_sum{tail} {self.sum}')
        out.append(f'{name}_count{tail} {self.count}')
        return out


def _label(value: str) -> str:
    return str(value).replace('\\', '\\\\').replace('"', '\\"').replace(
        '\n', '\\n')


class ServeMetrics:
    """Counters and histograms of one server."""

    def __init__(self) -> None:
        self.requests: Dict[str, int] = defaultdict(int)
        self.errors: Dict[Tuple[str, int], int] = defaultdict(int)
        self.latency: Dict[str, _Histogram] = {}
        self.batch_size = _Histogram(BATCH_BUCKETS)
        self.batch_tasks = _Histogram(BATCH_BUCKETS)
        self.mixed_batches = 0

    def record_request(self, tasks: Sequence[str], seconds: float) -> None:
        """A request answered with scores for ``tasks``."""
        for task in tasks:
            self.requests[task] += 1
            self.latency.setdefault(
                task, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def record_error(self, tasks: Sequence[str], status: int) -> None:
        """A request refused with ``status`` (its tasks as named, or
        ``''`` when it named none)."""
        for task in tasks or ('', ):
            self.errors[(task, int(status))] += 1

    def record_batch(self, size: int, num_tasks: int) -> None:
        """One forward of ``size`` samples over ``num_tasks`` tasks."""
        self.batch_size.observe(size)
        self.batch_tasks.observe(num_tasks)
        self.mixed_batches += int(num_tasks > 1)

    def merge(self, events: Sequence[tuple]) -> None:
        """Apply recorded events: ``('request', tasks, seconds)``,
        ``('error', tasks, status)``, ``('batch', size, num_tasks)``."""
        for kind, *args in events:
            getattr(self, f'record_{kind}')(*args)

    def render(self) -> str:
        """The Prometheus text exposition."""
        lines = ['# HELP vpt_requests_total Requests answered, per task.',
                 '# TYPE vpt_requests_total counter']
        lines += [f'vpt_requests_total{{task="{_label(t)}"}} {n}'
                  for t, n in sorted(self.requests.items())]
        lines += ['# HELP vpt_errors_total Requests refused, per task and '
                  'HTTP status.', '# TYPE vpt_errors_total counter']
        lines += [f'vpt_errors_total{{task="{_label(t)}",status="{s}"}} {n}'
                  for (t, s), n in sorted(self.errors.items())]
        lines += ['# HELP vpt_request_latency_seconds Time from arrival to '
                  'answer, per task.',
                  '# TYPE vpt_request_latency_seconds histogram']
        for task, hist in sorted(self.latency.items()):
            lines += hist.lines('vpt_request_latency_seconds',
                                f'task="{_label(task)}"')
        lines += ['# HELP vpt_batch_size Samples per backbone forward.',
                  '# TYPE vpt_batch_size histogram']
        lines += self.batch_size.lines('vpt_batch_size', '')
        lines += ['# HELP vpt_batch_tasks Tasks mixed in one backbone '
                  'forward.', '# TYPE vpt_batch_tasks histogram']
        lines += self.batch_tasks.lines('vpt_batch_tasks', '')
        lines += ['# HELP vpt_mixed_batches_total Forwards that mixed '
                  'several tasks.', '# TYPE vpt_mixed_batches_total counter',
                  f'vpt_mixed_batches_total {self.mixed_batches}']
        return '\n'.join(lines) + '\n'
