"""tools/gpu_check.sh: the plan (--dry-run), the report's arithmetic, and
the whole script at toy sizes on the CPU (--smoke)."""
import json
import subprocess

import pytest

from tests.test_tools.test_train import REPO, load_tool

STEPS = ['tier_core', 'cost_vit_fp32', 'cost_vit_bf16', 'time_to_result',
         'tier_tools', 'cost_swin', 'cost_dinov2', 'time_to_result_in_memory',
         'cost_setr']


def _gpu_check():
    return load_tool('tools/gpu_check.py')


def _script(*args, timeout=120):
    proc = subprocess.run(['bash', 'tools/gpu_check.sh', *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def test_dry_run_prints_the_plan_for_the_gpu(tmp_path):
    rc, out = _script(str(tmp_path / 'out'), '--dry-run')
    assert rc == 0, out
    for i, step in enumerate(STEPS, 1):
        assert f'{i}. {step} (limit ' in out
    # The paper's Table 12 setting, on the GPU, in fp32 and bf16.
    assert ('configs/vtab/vpt_deep_vit-b.py --batch-size 64 --img-size 224 '
            '--num-tokens 1 50 200 --methods full linear shallow deep '
            '--forms token fused --device cuda') in out
    assert out.count('--amp bf16') == 1
    assert '--per-class 100 --size 224' in out  # 1000 training images
    assert 'train_cfg.max_epochs=100' in out
    assert 'vpt_deep_vit-l_ade20k.py --batch-size 2 --img-size 512' in out
    assert not (tmp_path / 'out').exists()  # ran nothing


def test_full_check_needs_a_gpu(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip('this machine has a GPU')
    rc, out = _script(str(tmp_path / 'out'))
    assert rc != 0 and 'no CUDA GPU here' in out


def _cost(tmp_path, deep50_ms, deep50_mb, fused200_infer):
    """A cost.json of the benchmark's shape: Full 10 ms / 1000 MB, the
    frozen backbone 2 ms inference."""
    def row(method, p, form, train_ms, peak, infer_ms):
        return dict(method=method, num_tokens=p, form=form,
                    train=dict(ms_per_img=train_ms, peak_mb=peak,
                               base_mb=100, saved_mb=1),
                    infer=dict(ms_per_img=infer_ms, peak_mb=peak,
                               base_mb=100, saved_mb=None))
    rows = [row('full', 0, '-', 10, 1000, 2.2), row('linear', 0, '-', 3,
                                                    300, 2.0),
            row('deep', 50, 'fused', deep50_ms, deep50_mb, 2.1),
            row('deep', 50, 'token', 8, 900, 2.5),
            row('deep', 200, 'fused', 9, 900, fused200_infer)]
    out = tmp_path / 'cost'
    out.mkdir()
    (out / 'cost.json').write_text(json.dumps(dict(
        device='GPU', amp='fp32', timing='one process', rows=rows)))
    return str(out)


@pytest.mark.parametrize('figures, met', [
    ((6.9, 590, 2.09), (True, True, True)),
    ((7.1, 610, 2.2), (False, False, False)),
])
def test_goals_are_ratios_of_one_run(tmp_path, figures, met):
    gpu_check = _gpu_check()
    summary = gpu_check.cost_summary(_cost(tmp_path, *figures))
    goals = gpu_check.goals_of(summary)
    assert goals['fused']['deep50_train_time'] == round(figures[0] / 10, 3)
    assert goals['fused']['deep50_train_memory'] == round(figures[1] / 1000,
                                                          3)
    assert goals['fused']['p200_infer_time'] == round(figures[2] / 2.0, 3)
    assert goals['token']['deep50_train_time'] == 0.8
    assert tuple(goals['met'].values()) == met


def test_junit_summary_names_the_failures(tmp_path):
    path = tmp_path / 'tier.xml'
    path.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="t" name="test_a"/>'
        '<testcase classname="t" name="test_b"><failure message="boom"/>'
        '</testcase><testcase classname="t" name="test_c">'
        '<skipped message="needs CUDA"/></testcase>'
        '<testcase classname="t" name="test_d"><error message="setup"/>'
        '</testcase></testsuite></testsuites>')
    summary = _gpu_check().junit_summary(str(path))
    assert (summary['passed'], summary['failed'], summary['skipped']) == (
        1, 2, 1)
    assert [f['test'] for f in summary['failures']] == ['test_b', 'test_d']


@pytest.mark.slow
def test_smoke_run_writes_every_step_to_the_report(tmp_path):
    """The whole script at toy sizes on this machine: every step runs and
    is reported, with its figures (the cuda tier skips without a GPU)."""
    out = tmp_path / 'out'
    rc, log = _script(str(out), '--smoke', '--work-dir',
                      str(tmp_path / 'work'), timeout=900)
    assert rc == 0, log[-3000:]
    report = json.loads((out / 'report.json').read_text())
    assert [s['name'] for s in report['steps']] == STEPS
    assert {s['name']: s['status'] for s in report['steps']} == dict.fromkeys(
        STEPS, 'ok')
    steps = {s['name']: s for s in report['steps']}
    tier = steps['tier_core']['figures']
    assert tier['failed'] == 0 and tier['passed'] + tier['skipped'] > 10
    cost = steps['cost_vit_bf16']['figures']
    assert cost['amp'] == 'bf16' and '| VPT-Deep | 2 | fused |' in cost[
        'table']
    assert cost['ratios']['deep_p2_fused']['train_time_vs_full'] > 0
    for name in ('time_to_result', 'time_to_result_in_memory'):
        ttr = steps[name]['figures']
        assert 0 <= ttr['test_top1'] <= 100 and ttr['logged_iters'] > 0
        assert 0 <= ttr['data_share'] <= 1
    assert 'ttr_in_memory.py' in steps['time_to_result_in_memory']['command']
    md = (out / 'report.md').read_text()
    assert '# vpt_mm GPU check: CPU' in md and 'time to a result: ' in md
    assert (out / 'gpu_check.log').stat().st_size > 1000
    assert sorted(p.name for p in out.iterdir()) == [
        'gpu_check.log', 'report.json', 'report.md']


def test_a_tier_killed_at_its_limit_reports_what_finished():
    out = ('tests/test_cuda.py::test_a[fp16] PASSED   [ 10%]\n'
           'tests/test_cuda.py::test_b FAILED     [ 20%]\n'
           'tests/test_cuda.py::test_c SKIPPED (needs CUDA) [ 30%]\n'
           'tests/test_cuda.py::test_d ')
    summary = _gpu_check().verbose_summary(out)
    assert (summary['passed'], summary['failed'], summary['skipped']) == (
        1, 1, 1)
    assert summary['failures'] == [dict(test='test_b', message='FAILED')]
    assert 'stopped before the end' in summary['incomplete']


def test_steps_without_time_left_are_reported_not_run(tmp_path):
    out = tmp_path / 'out'
    rc, log = _script(str(out), '--smoke', '--budget', '5', '--only',
                      'tier_core', 'cost_swin', '--work-dir',
                      str(tmp_path / 'work'))
    assert rc != 0 and 'not every step ran through: tier_core: not run' in log
    steps = json.loads((out / 'report.json').read_text())['steps']
    assert [(s['name'], s['status']) for s in steps] == [
        ('tier_core', 'not run (out of time)'),
        ('cost_swin', 'not run (out of time)')]
    assert '| tier_core | not run (out of time) |' in (
        out / 'report.md').read_text()
