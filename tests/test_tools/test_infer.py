"""tools/infer.py on image files of a generated VTAB task, with the
benchmark config: preds.json in its documented form; an ensemble is the
mean of its members; tools/analysis_tools/prompt_ensemble.py."""
import json
import os.path as osp
import sys

import numpy as np
import pytest
from mmpretrain.registry import MODELS

from tests.conftest import perturb_tuned
from tests.test_tools.test_benchmarks import bench  # noqa: F401
from tests.test_tools.test_train import run
from vpt_mm.checkpoints import save_tuned
from vpt_mm.config import resolve_config

pytestmark = pytest.mark.slow


def tuned(config, path, seed, num_tokens):
    cfg = resolve_config(config, dict(model=dict(backbone=dict(
        prompt_cfg=dict(num_tokens=num_tokens)))), 'dmlab')
    model = MODELS.build(cfg.model)
    model.init_weights()
    save_tuned(perturb_tuned(model, seed), path)
    return path


def test_infer_tool(bench, tmp_path):  # noqa: F811
    root, configs = bench
    a = tuned(configs['vtab'], str(tmp_path / 'a.safetensors'), 0, 4)
    b = tuned(configs['vtab'], str(tmp_path / 'b.safetensors'), 1, 2)
    images = str(root / 'vtab' / 'dmlab' / 'images' / 'test')
    out = str(tmp_path / 'preds.json')
    log = run([sys.executable, 'tools/infer.py', configs['vtab'], images,
               '--task', f'dmlab={a}', '--task', f'b={b}', '--task',
               f'ab={a},{b}', '--out', out, '--batch-size', '4'])
    preds = json.load(open(out))
    assert len(preds) == 6 and all(p.startswith(images) for p in preds)
    for row in preds.values():
        assert set(row) == {'dmlab', 'b', 'ab'}
        for name, pred in row.items():
            assert set(pred) == {'pred_label', 'pred_class', 'pred_scores'}
            assert len(pred['pred_scores']) == 6  # dmlab's 6 classes
            assert pred['pred_label'] == int(np.argmax(pred['pred_scores']))
            assert pred['pred_class'] == str(pred['pred_label'])
        np.testing.assert_allclose(
            row['ab']['pred_scores'],
            (np.array(row['dmlab']['pred_scores']) +
             np.array(row['b']['pred_scores'])) / 2, atol=1e-6)
    assert 'Wrote 6 predictions' in log
    # Each image printed with every task's class and score.
    assert f'{osp.join(images, "0_0.jpg")}: dmlab: ' in log

    log = run([sys.executable, 'tools/analysis_tools/prompt_ensemble.py',
               configs['vtab'], a, b, '--task', 'dmlab'])
    assert 'dmlab: 6 test images, 2 prompt sets' in log
    assert 'ensemble (mean probs)' in log


def test_benchmark_multitask_runs(tmp_path):
    from tests.test_tools.test_train import write_config
    cfg = write_config(tmp_path, epochs=1)
    log = run([sys.executable, 'tools/analysis_tools/benchmark_multitask.py',
               cfg, '--batch-size', '8', '--tasks', '1', '3', '--repeats',
               '1'])
    assert 'one task, its own model (fused)' in log
    assert '3 task(s) mixed in the batch' in log
    assert '(1.00x its tuned tensors)' in log
