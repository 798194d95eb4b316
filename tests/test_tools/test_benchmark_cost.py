"""tools/analysis_tools/benchmark_cost.py on a tiny ViT."""
import json
import sys

import pytest

from tests.test_tools.test_train import REPO, run

pytestmark = pytest.mark.slow


def write_tiny_vit_config(tmp_path) -> str:
    """configs/vtab/vpt_deep_vit-b.py with a 2-layer 32-wide ViT at 32x32."""
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f"""
_base_ = ['{REPO}/configs/vtab/vpt_deep_vit-b.py']
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, num_layers=2,
                            num_heads=2, feedforward_channels=64),
                  img_size=32, patch_size=8),
    head=dict(in_channels=32))
""")
    return str(cfg)


def test_benchmark_cost_tiny(tmp_path):
    cfg = write_tiny_vit_config(tmp_path)
    out = tmp_path / 'cost'
    log = run([
        sys.executable, 'tools/analysis_tools/benchmark_cost.py', str(cfg),
        '--num-tokens', '2', '--methods', 'full', 'deep', 'prefix',
        '--forms', 'token', 'fused', 'fused+cp', '--batch-size', '2',
        '--img-size', '32', '--interleave',
        '--repeats', '1', '--out-dir', str(out)
    ])
    assert '| Full | - | - |' in log and '| VPT-Deep | 2 | fused |' in log
    assert '| VPT-prefix | 2 | fused |' in log
    assert 'timing: interleaved in one process' in log
    rows = json.loads((out / 'cost.json').read_text())['rows']
    assert [(r['method'], r['form']) for r in rows] == [
        ('full', '-'), ('deep', 'token'), ('deep', 'fused'),
        ('deep', 'fused+cp'), ('prefix', 'fused'), ('prefix', 'fused+cp')]
    for row in rows:
        for mode in ('train', 'infer'):
            cost = row[mode]
            assert cost['ms_per_img'] > 0
            assert cost['peak_mb'] >= cost['base_mb'] > 0
    saved = {(r['method'], r['form']): r['train']['saved_mb'] for r in rows}
    assert saved[('deep', 'fused')] < saved[('deep', 'token')] < saved[
        ('full', '-')]
    assert saved[('deep', 'fused+cp')] < saved[('deep', 'fused')] / 2
    assert (out / 'cost.png').stat().st_size > 1000


def test_benchmark_cost_tiny_swin(tmp_path):
    """Swin: Full and Linear on mmpretrain's own Swin with a pooling neck,
    VPT-prefix pooling the image tokens (no prompt tokens)."""
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f"""
_base_ = ['{REPO}/configs/vtab/vpt_deep_swin-b.py']
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=16, depths=[2, 2],
                            num_heads=[2, 4]),
                  img_size=32, window_size=4, out_indices=(1, )),
    head=dict(in_channels=32))
""")
    log = run([
        sys.executable, 'tools/analysis_tools/benchmark_cost.py', str(cfg),
        '--num-tokens', '2', '--batch-size', '2', '--img-size', '32',
        '--methods', 'full', 'linear', 'deep', 'prefix', '--modes', 'train',
        '--repeats', '1', '--out-dir', str(tmp_path)
    ])
    assert '| VPT-Deep | 2 | fused |' in log
    assert '| VPT-prefix | 2 | fused |' in log
    rows = json.loads((tmp_path / 'cost.json').read_text())['rows']
    assert len(rows) == 5 and all(r['train']['ms_per_img'] > 0 for r in rows)
