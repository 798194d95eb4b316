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

:func:`significance_tests` compares one row (the reference method) with
every other, as the paper's appendix does: a one-sided Wilcoxon signed-rank
test over the tasks of each benchmark (paired by task, the reference
better), and a one-sided Welch's t-test per task over the seeds.
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
from ..fileio import atomic_file

REQUIRED = ('method', 'backbone', 'task', 'top1')


def _stats(values: Sequence[Optional[float]]) -> dict:
    if any(v is None for v in values):
        return dict(mean=None, std=None, n=len(values), failed=True)
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return dict(mean=float(array.mean()), std=std, n=int(len(array)),
                values=[float(v) for v in values])


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


def find_row(summary: dict, reference: str) -> dict:
    """The row of ``summary`` named ``reference``: ``METHOD`` or
    ``METHOD:BACKBONE`` (needed when the method has several backbones).

    Raises:
        ValueError: If no row, or more than one, matches.
    """
    method, _, backbone = reference.partition(':')
    rows = [r for r in summary['rows'] if r['method'] == method and
            (not backbone or r['backbone'] == backbone)]
    if len(rows) != 1:
        names = [f'{r["method"]}:{r["backbone"]}' for r in summary['rows']]
        raise ValueError(
            f'--reference {reference!r} matches {len(rows)} rows of the '
            f'table; choose one of {names}')
    return rows[0]


def significance_tests(summary: dict, reference: str) -> List[dict]:
    """One-sided tests that the reference row is better than each other
    row (scipy).

    - **Wilcoxon signed-rank**, per benchmark: the per-task means of both
      rows, paired by task over the tasks both have (failed ones left out),
      alternative "the reference is greater". With fewer than 2 tasks, or
      no difference at all, there is no test (p is None).
    - **Welch's t-test**, per task: the seeds of both rows (unequal
      variances), alternative "the reference is greater"; only where both
      have at least 2 seeds.

    Args:
        summary (dict): From :func:`summarize_results`.
        reference (str): ``METHOD`` or ``METHOD:BACKBONE``
            (:func:`find_row`).

    Returns:
        list[dict]: One entry per other row: ``method``, ``backbone``,
        ``wilcoxon`` (``{benchmark: {p, statistic, n}}``) and ``welch``
        (``{task: p}``).
    """
    from scipy.stats import ttest_ind, wilcoxon
    ref = find_row(summary, reference)
    tests = []
    for row in summary['rows']:
        if row is ref:
            continue
        result = dict(method=row['method'], backbone=row['backbone'],
                      wilcoxon={}, welch={})
        benchmarks = sorted({get_task(t).benchmark for t in row['tasks']})
        for benchmark in benchmarks:
            pairs = [(ref['tasks'][t]['mean'], stats['mean'])
                     for t, stats in row['tasks'].items()
                     if get_task(t).benchmark == benchmark
                     and stats['mean'] is not None
                     and ref['tasks'].get(t, {}).get('mean') is not None]
            diffs = [a - b for a, b in pairs]
            entry = dict(p=None, statistic=None, n=len(pairs))
            if len(pairs) >= 2 and any(d != 0 for d in diffs):
                test = wilcoxon(diffs, alternative='greater')
                entry.update(p=float(test.pvalue),
                             statistic=float(test.statistic))
            result['wilcoxon'][benchmark] = entry
        for task, stats in row['tasks'].items():
            mine = ref['tasks'].get(task)
            if (mine is None or stats['mean'] is None
                    or mine['mean'] is None or stats['n'] < 2
                    or mine['n'] < 2):
                continue
            if mine['values'] == stats['values'] or (
                    mine['std'] == 0 and stats['std'] == 0):
                continue  # no variance: the test is undefined
            test = ttest_ind(mine['values'], stats['values'],
                             equal_var=False, alternative='greater')
            result['welch'][task] = float(test.pvalue)
        tests.append(result)
    return tests


def _p(value: Optional[float]) -> str:
    return '' if value is None else f'{value:.3g}'


def _wilcoxon_cell(entry: dict) -> str:
    """A Wilcoxon cell: the p-value over n tasks, or why there is none."""
    n = entry['n']
    if entry['p'] is not None:
        return f'{_p(entry["p"])} (n={n})'
    if n < 2:
        return f'no test: {n} task{"" if n == 1 else "s"} (needs 2)'
    return f'no test: no difference on the {n} tasks'


def significance_lines(tests: List[dict], reference: str,
                       columns: Sequence[Sequence[str]]) -> List[str]:
    """Markdown rows of :func:`significance_tests`, under the table: per
    other row, Welch's p-value in each task column and Wilcoxon's in each
    benchmark's mean column."""
    lines = []
    for test in tests:
        cells = []
        for kind, key, _ in columns:
            if kind == 'task':
                cells.append(_p(test['welch'].get(key)))
            elif kind == 'mean' or (kind == 'group' and key == 'FGVC'):
                benchmark = 'vtab1k' if kind == 'mean' else 'fgvc'
                entry = test['wilcoxon'].get(benchmark)
                cells.append('' if entry is None else _wilcoxon_cell(entry))
            else:
                cells.append('')
        lines.append('| ' + ' | '.join(
            [f'p: {reference} > {test["method"]}', test['backbone']] + cells)
            + ' |')
    return lines


def write_results(records: Sequence[dict],
                  out_prefix: str,
                  reference: Optional[str] = None) -> dict:
    """Write the table as ``<out_prefix>.md``, ``.csv`` and ``.json``.

    The markdown shows ``mean ± std`` over seeds; the csv has a numeric
    mean column per task and group plus a ``<task> std`` column per task;
    the json holds the summary and the records it came from.

    With ``reference``, the table gets one row of p-values per other row
    (:func:`significance_tests`): Welch's t-test in the task columns,
    the Wilcoxon signed-rank test over the tasks in the benchmark's mean
    column (VTAB mean, FGVC mean); the json holds them under
    ``significance``.

    Args:
        records (Sequence[dict]): Test results (see
            :func:`summarize_results`).
        out_prefix (str): Output path without extension.
        reference (str, optional): ``METHOD`` or ``METHOD:BACKBONE`` to
            test against every other row.

    Returns:
        dict: The summary written.
    """
    summary = summarize_results(records)
    if reference is not None:
        summary['significance'] = dict(
            reference=reference,
            tests=significance_tests(summary, reference))
    columns = summary['columns']
    os.makedirs(osp.dirname(osp.abspath(out_prefix)), exist_ok=True)

    header = ['Method', 'Backbone'] + [title for _, _, title in columns]
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join(['---'] * 2 + [':---:'] * len(columns)) + '|']
    for row in summary['rows']:
        cells = [_cell(row, kind, key)[0] for kind, key, _ in columns]
        lines.append('| ' + ' | '.join([row['method'], row['backbone']] +
                                       cells) + ' |')
    if reference is not None:
        lines += significance_lines(summary['significance']['tests'],
                                    reference, columns)
    with atomic_file(f'{out_prefix}.md') as f:
        f.write('\n'.join(lines) + '\n')

    with atomic_file(f'{out_prefix}.csv', newline='') as f:
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

    with atomic_file(f'{out_prefix}.json') as f:
        json.dump(dict(summary, records=list(records)), f, indent=2)
        f.write('\n')
    return summary
