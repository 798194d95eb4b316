"""Per-task, per-group results tables in the shape of the paper's Table 1.

A *record* is one test result: ``dict(method=..., backbone=..., task=...,
seed=..., top1=...)`` with ``top1`` in percent. Records of several seeds
of the same method, backbone and task are averaged (mean ± sample std).
The table has one row per (method, backbone) and, for each benchmark that
appears in the records, one column per task followed by the group means:

- VTAB-1k: the 19 tasks, then Natural, Specialized, Structured and
  ``VTAB mean`` (the mean of the three group means);
- FGVC: the 5 datasets, then ``FGVC mean``.

A group mean is left empty until every task of the group has a result, so
a partial table never shows a mean over a different set of tasks. A record
with ``top1=None`` is a run that gave no number (it diverged): its task's
cell reads ``failed`` and the group means that need it stay empty; a failed
run is never averaged as 0.
"""
from __future__ import annotations

import csv
import json
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..datasets import GROUPS, TASKS, get_task

REQUIRED = ('method', 'backbone', 'task', 'top1')


def _stats(values: Sequence[Optional[float]]) -> dict:
    if any(v is None for v in values):
        return dict(mean=None, std=None, n=len(values), failed=True)
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return dict(mean=float(values.mean()), std=std, n=int(len(values)))


def _columns(benchmarks: Sequence[str]) -> List[Tuple[str, str, str]]:
    """``(kind, key, title)`` of every column, in table order."""
    columns = []
    for benchmark in ('vtab1k', 'fgvc'):
        if benchmark not in benchmarks:
            continue
        columns += [('task', name, TASKS[name].title) for name in TASKS
                    if TASKS[name].benchmark == benchmark]
        if benchmark == 'vtab1k':
            columns += [('group', g, g) for g in GROUPS[benchmark]]
            columns.append(('mean', benchmark, 'VTAB mean'))
        else:
            columns.append(('group', 'FGVC', 'FGVC mean'))
    return columns


def summarize_results(records: Sequence[dict]) -> dict:
    """Average the records per task and compute the group means.

    Args:
        records (Sequence[dict]): Test results, each with ``method``,
            ``backbone``, ``task``, ``top1`` (percent, or None for a run
            that diverged) and optionally ``seed``.

    Returns:
        dict: ``columns`` (``[kind, key, title]`` triples) and ``rows``,
        one per (method, backbone) in first-seen order, each with
        ``tasks`` (``{task: {mean, std, n}}``), ``groups`` (``{group:
        mean or None}``) and ``means`` (``{benchmark: mean or None}``).
    """
    per_row: Dict[Tuple[str, str], Dict[str, List[float]]] = OrderedDict()
    benchmarks = set()
    for i, record in enumerate(records):
        missing = [k for k in REQUIRED if k not in record]
        if missing:
            raise ValueError(f'Result record {i} lacks {missing}: {record}')
        info = get_task(record['task'])
        benchmarks.add(info.benchmark)
        key = (str(record['method']), str(record['backbone']))
        top1 = record['top1']
        per_row.setdefault(key, {}).setdefault(info.name, []).append(
            None if top1 is None else float(top1))
    rows = []
    for (method, backbone), tasks in per_row.items():
        stats = {t: _stats(v) for t, v in tasks.items()}
        groups: Dict[str, Optional[float]] = {}
        means: Dict[str, Optional[float]] = {}
        for benchmark in sorted(benchmarks):
            for group in GROUPS[benchmark]:
                names = [n for n, t in TASKS.items() if t.group == group]
                groups[group] = (
                    float(np.mean([stats[n]['mean'] for n in names]))
                    if all(n in stats and stats[n]['mean'] is not None
                           for n in names) else None)
            group_means = [groups[g] for g in GROUPS[benchmark]]
            means[benchmark] = (None if None in group_means else float(
                np.mean(group_means)))
        rows.append(
            dict(method=method, backbone=backbone, tasks=stats,
                 groups=groups, means=means))
    return dict(columns=[list(c) for c in _columns(sorted(benchmarks))],
                rows=rows)


def _cell(row: dict, kind: str, key: str) -> Tuple[str, Optional[float],
                                                   Optional[float]]:
    """Text, mean and std of one cell."""
    if kind == 'task':
        stats = row['tasks'].get(key)
        if stats is None:
            return '', None, None
        if stats.get('failed'):
            return 'failed', None, None
        text = f'{stats["mean"]:.2f}'
        if stats['n'] > 1:
            text += f' ± {stats["std"]:.2f}'
        return text, stats['mean'], stats['std']
    value = (row['groups'] if kind == 'group' else row['means']).get(key)
    return ('' if value is None else f'{value:.2f}'), value, None


def write_results(records: Sequence[dict], out_prefix: str) -> dict:
    """Write the table as ``<out_prefix>.md``, ``.csv`` and ``.json``.

    The markdown shows ``mean ± std`` over seeds; the csv has a numeric
    mean column per task and group plus a ``<task> std`` column per task;
    the json holds the summary and the records it came from.

    Args:
        records (Sequence[dict]): Test results (see
            :func:`summarize_results`).
        out_prefix (str): Output path without extension.

    Returns:
        dict: The summary written.
    """
    summary = summarize_results(records)
    columns = summary['columns']
    os.makedirs(osp.dirname(osp.abspath(out_prefix)), exist_ok=True)

    header = ['Method', 'Backbone'] + [title for _, _, title in columns]
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join(['---'] * 2 + [':---:'] * len(columns)) + '|']
    for row in summary['rows']:
        cells = [_cell(row, kind, key)[0] for kind, key, _ in columns]
        lines.append('| ' + ' | '.join([row['method'], row['backbone']] +
                                       cells) + ' |')
    with open(f'{out_prefix}.md', 'w') as f:
        f.write('\n'.join(lines) + '\n')

    with open(f'{out_prefix}.csv', 'w', newline='') as f:
        writer = csv.writer(f)
        csv_header = ['method', 'backbone']
        for kind, key, title in columns:
            csv_header.append(title)
            if kind == 'task':
                csv_header.append(f'{title} std')
        writer.writerow(csv_header)
        for row in summary['rows']:
            values = [row['method'], row['backbone']]
            for kind, key, _ in columns:
                _, mean, std = _cell(row, kind, key)
                values.append('' if mean is None else f'{mean:.4f}')
                if kind == 'task':
                    values.append('' if std is None else f'{std:.4f}')
            writer.writerow(values)

    with open(f'{out_prefix}.json', 'w') as f:
        json.dump(dict(summary, records=list(records)), f, indent=2)
        f.write('\n')
    return summary
