import csv
import json

import numpy as np
import pytest

from vpt_mm.datasets import TASKS, tasks_of
from vpt_mm.evaluation import summarize_results, write_results


def _records(method='VPT-Deep', tasks=None, seeds=(0, 1, 2)):
    tasks = tasks or list(TASKS)
    return [
        dict(method=method, backbone='ViT-B/16', task=t, seed=s,
             top1=float(10 * (i % 7) + s))
        for i, t in enumerate(tasks) for s in seeds
    ]


def test_means_std_and_groups():
    summary = summarize_results(_records())
    (row, ) = summary['rows']
    cifar = row['tasks']['cifar100']  # index 0: 0, 1, 2
    assert cifar['mean'] == pytest.approx(1.0)
    assert cifar['std'] == pytest.approx(1.0)  # sample std
    assert cifar['n'] == 3
    natural = [row['tasks'][t]['mean'] for t in tasks_of('vtab1k')[:7]]
    assert row['groups']['Natural'] == pytest.approx(np.mean(natural))
    assert row['means']['vtab1k'] == pytest.approx(
        np.mean([row['groups'][g]
                 for g in ('Natural', 'Specialized', 'Structured')]))
    fgvc = [row['tasks'][t]['mean'] for t in tasks_of('fgvc')]
    assert row['groups']['FGVC'] == pytest.approx(np.mean(fgvc))
    titles = [c[2] for c in summary['columns']]
    assert titles[:2] == ['CIFAR-100', 'Caltech101']
    assert titles[19:23] == ['Natural', 'Specialized', 'Structured',
                             'VTAB mean']
    assert titles[-1] == 'FGVC mean'


def test_incomplete_groups_have_no_mean():
    summary = summarize_results(
        _records(tasks=['dmlab', 'eurosat'], seeds=(0, )))
    (row, ) = summary['rows']
    assert row['groups'] == dict(Natural=None, Specialized=None,
                                 Structured=None)
    assert row['means']['vtab1k'] is None
    assert row['tasks']['dmlab']['std'] == 0.0
    assert [c[0] for c in summary['columns']].count('task') == 19


def test_bad_records():
    with pytest.raises(ValueError, match="lacks \\['top1'\\]"):
        summarize_results([dict(method='a', backbone='b', task='dmlab')])
    with pytest.raises(ValueError, match='Unknown task'):
        summarize_results(
            [dict(method='a', backbone='b', task='x', top1=1.0)])


def test_write_md_csv_json(tmp_path):
    records = _records() + _records('Linear', tasks=['cub'], seeds=(0, ))
    write_results(records, str(tmp_path / 'table'))
    md = (tmp_path / 'table.md').read_text().splitlines()
    assert md[0].startswith('| Method | Backbone | CIFAR-100 |')
    assert len(md) == 4
    assert '| VPT-Deep | ViT-B/16 | 1.00 ± 1.00 |' in md[2]
    linear = md[3].split('|')
    assert linear[1].strip() == 'Linear' and '' == linear[3].strip()
    with open(tmp_path / 'table.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['method'] for r in rows] == ['VPT-Deep', 'Linear']
    assert float(rows[0]['CIFAR-100']) == 1.0
    assert float(rows[0]['CIFAR-100 std']) == 1.0
    assert rows[1]['CIFAR-100'] == '' and rows[1]['FGVC mean'] == ''
    data = json.loads((tmp_path / 'table.json').read_text())
    assert len(data['records']) == len(records)
    assert data['rows'][1]['tasks']['cub']['mean'] == 0.0


def test_a_diverged_run_is_failed_never_zero(tmp_path):
    records = _records()
    records[1]['top1'] = None  # cifar100 seed 1 diverged
    summary = write_results(records, str(tmp_path / 'results'))
    (row, ) = summary['rows']
    assert row['tasks']['cifar100']['failed']
    assert row['groups']['Natural'] is None
    assert row['means']['vtab1k'] is None
    assert row['groups']['Specialized'] is not None
    line = (tmp_path / 'results.md').read_text().splitlines()[2]
    assert line.split(' | ')[2] == 'failed'


def test_significance_tests(tmp_path):
    """VPT-Deep better than Linear on every task by 5-7 points: the exact
    one-sided Wilcoxon p over the 19 VTAB tasks is 2**-19; Welch's test
    per task over 3 seeds is significant; against itself shifted by noise
    only, nothing is."""
    from vpt_mm.evaluation import significance_tests
    vtab = tasks_of('vtab1k')
    deep = _records('VPT-Deep', vtab)
    rng = np.random.RandomState(0)
    linear = [dict(r, method='Linear', top1=r['top1'] - 5 - 2 * rng.rand()
                   + 0.1 * r['seed']) for r in deep]
    same = [dict(r, method='Same') for r in deep]
    summary = summarize_results(deep + linear + same)
    tests = {t['method']: t for t in significance_tests(summary, 'VPT-Deep')}
    assert set(tests) == {'Linear', 'Same'}
    wil = tests['Linear']['wilcoxon']['vtab1k']
    assert wil['n'] == 19 and wil['p'] == pytest.approx(2.0**-19)
    assert len(tests['Linear']['welch']) == 19
    assert max(tests['Linear']['welch'].values()) < 0.05
    # Identical results: no test is defined, none is reported.
    assert tests['Same']['wilcoxon']['vtab1k']['p'] is None
    assert tests['Same']['welch'] == {}
    # Reversed, the one-sided test finds nothing.
    back = significance_tests(summary, 'Linear')
    assert next(t for t in back if t['method'] == 'VPT-Deep')[
        'wilcoxon']['vtab1k']['p'] > 0.99
    with pytest.raises(ValueError, match='matches 0 rows'):
        significance_tests(summary, 'VPT-Shallow')
    # Written as extra rows of the table and into the json.
    write_results(deep + linear, str(tmp_path / 't'), reference='VPT-Deep')
    md = (tmp_path / 't.md').read_text().splitlines()
    row = next(r for r in md if r.startswith('| p: VPT-Deep > Linear'))
    assert '1.91e-06 (n=19)' in row
    assert len(row.split('|')) == len(md[0].split('|'))
    saved = json.loads((tmp_path / 't.json').read_text())
    assert saved['significance']['reference'] == 'VPT-Deep'


def test_significance_cell_says_why_there_is_no_test(tmp_path):
    """With one task the Wilcoxon test is undefined: the cell says so,
    instead of a bare "(n=1)"."""
    deep = _records('VPT-Deep', ['dmlab'])
    linear = [dict(r, method='Linear', top1=r['top1'] - 3) for r in deep]
    write_results(deep + linear, str(tmp_path / 't'), reference='VPT-Deep')
    row = next(r for r in (tmp_path / 't.md').read_text().splitlines()
               if r.startswith('| p: VPT-Deep > Linear'))
    assert 'no test: 1 task (needs 2)' in row
    assert '| (n=1)' not in row
