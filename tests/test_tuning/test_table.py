"""Parameter accounting of the protocols on ViT-B/16, against counts worked
out by hand."""
import subprocess
import sys

import pytest

from tests.test_tools.test_train import REPO
from vpt_mm.datasets import get_task, tasks_of
from vpt_mm.tuning.table import protocol_cost

D, L, FFN = 768, 12, 3072
BACKBONE = 85_798_656
CLASSES = [get_task(t).num_classes for t in tasks_of('vtab1k') +
           tasks_of('fgvc')]


def test_twenty_four_tasks():
    assert len(CLASSES) == 24 and sum(CLASSES) == 2113


def test_linear():
    cost = protocol_cost('vit-b16', dict(type='Linear'), [100])
    assert cost.backbone == BACKBONE
    assert cost.tuned == 0
    assert cost.per_task == [D * 100 + 100]


def test_bias():
    # patch embedding; per layer ln1, qkv, proj, ln2, fc1, fc2; final norm
    per_layer = D + 3 * D + D + D + FFN + D
    assert protocol_cost('vit-b16', dict(type='Bias'),
                         [10]).tuned == D + L * per_layer + D == 102_912


def test_adapter_r8():
    hidden = D // 8
    per_layer = (D * hidden + hidden) + (hidden * D + D)
    cost = protocol_cost('vit-b16', dict(type='Adapter', reduction=8), [10])
    assert cost.tuned == L * per_layer == 1_779_840


def test_vpt_deep_and_shallow():
    deep = protocol_cost('vit-b16', dict(type='VPT'), [10], [50])
    assert deep.tuned == L * 50 * D == 460_800
    shallow = protocol_cost('vit-b16', dict(type='VPT'), [10], [50],
                            deep=False)
    assert shallow.tuned == 50 * D
    # Per-task p: each task its own prompts and head.
    mixed = protocol_cost('vit-b16', dict(type='VPT'), [10, 3], [1, 200])
    assert mixed.per_task == [L * 1 * D + 10 * (D + 1),
                              L * 200 * D + 3 * (D + 1)]


def test_totals_for_24_tasks():
    full = protocol_cost('vit-b16', dict(type='Full'), CLASSES)
    heads = sum(CLASSES) * (D + 1)
    assert full.total_multiple == pytest.approx(
        (24 * BACKBONE + heads) / BACKBONE)
    assert f'{full.total_multiple:.2f}' == '24.02'
    deep = protocol_cost('vit-b16', dict(type='VPT'), CLASSES, [50] * 24)
    assert deep.total_multiple == pytest.approx(
        (BACKBONE + 24 * 460_800 + heads) / BACKBONE)


@pytest.mark.slow
def test_param_table_tool():
    proc = subprocess.run(
        [sys.executable, 'tools/analysis_tools/param_table.py',
         '--benchmarks', 'fgvc', '--num-tokens', '10'],
        cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '| Full | 85,798,656 | 100.00% |' in proc.stdout
    assert '| VPT-Deep | 92,160 | 0.10% |' in proc.stdout
    assert 'total params for 5 tasks' in proc.stdout


def test_table_counts_timm_backbones_from_their_configs():
    """The timm models' rows read their VTAB config (a ViT-B: 12 layers of
    width 768, so VPT-Deep p=50 tunes 460,800 prompt parameters)."""
    from vpt_mm.tuning.table import model_config
    cfg = model_config('dinov2-b14')
    assert cfg['backbone']['type'] == 'PromptedTimmViT'
    deep = protocol_cost('dinov2-b14', dict(type='VPT'), [10], [50])
    assert deep.tuned == 12 * 50 * 768
    linear = protocol_cost('dinov2-b14', dict(type='Linear'), [10])
    assert linear.tuned == 0 and linear.backbone == deep.backbone
