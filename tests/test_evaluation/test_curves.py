"""Curves from sweep folders written as tools/sweep.py writes them."""
import json
import os.path as osp
import subprocess
import sys

import pytest

from tests.test_tools.test_train import REPO
from vpt_mm.evaluation.curves import (
    depth_curves,
    fraction_curves,
    load_sweep,
    prompt_depth,
    prompt_length_curves,
)

ARCH = dict(embed_dims=32, num_layers=4, num_heads=2,
            feedforward_channels=64)


def write_sweep(root, name, config, tasks, fraction=None, options=(),
                lengths=(), base=60.0):
    """A finished sweep folder: sweep.json, records.json (3 seeds),
    <task>/best.json (a 2 x 1 x len(lengths) grid)."""
    path = osp.join(str(root), name)
    spec = dict(config=config, lrs=[1, 0.1], weight_decays=[0.0],
                num_tokens=list(lengths), train_fraction=fraction,
                fraction_seed=0, cfg_options=list(options))
    records = []
    for i, task in enumerate(tasks):
        scores = []
        for lr in (1.0, 0.1):
            for p in (lengths or [None]):
                point = dict(lr=lr, weight_decay=0.0,
                             top1=base + i + lr + (p or 0) / 10)
                if p is not None:
                    point['num_tokens'] = p
                scores.append(point)
        chosen = max(scores, key=lambda s: s['top1'])
        best = dict(task=task, chosen=chosen, diverged=[], scores=scores)
        _write(osp.join(path, task, 'best.json'), best)
        records += [dict(method='VPT-Deep', backbone='ViT-B/16', task=task,
                         seed=s, top1=base + i + s) for s in range(3)]
    _write(osp.join(path, 'sweep.json'), spec)
    _write(osp.join(path, 'records.json'), records)
    return path


def _write(path, obj):
    import os
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f)


def tiny_config(tmp_path):
    cfg = tmp_path / 'tiny.py'
    base = osp.join(REPO, 'configs', 'vtab', 'vpt_deep_vit-b.py')
    cfg.write_text(f'_base_ = [{base!r}]\n'
                   f'model = dict(backbone=dict(arch=dict(_delete_=True, '
                   f'**{ARCH!r}), img_size=32, patch_size=8))\n')
    return str(cfg)


def make_sweeps(tmp_path):
    """Sweeps for each figure: 3 fractions, a prompt-length grid, 3
    depths of a 4-layer tiny ViT."""
    cfg = tiny_config(tmp_path)
    sweeps = [
        load_sweep(write_sweep(tmp_path, f'f{f}', cfg, ['dmlab', 'cub'],
                               fraction=f, base=50 + 10 * (f or 1.0)))
        for f in (0.1, 0.5, None)
    ]
    lengths = [load_sweep(write_sweep(tmp_path, 'p', cfg, ['dmlab'],
                                      lengths=[1, 10, 50]))]
    shallow = write_sweep(tmp_path, 'd1', cfg, ['dmlab'],
                          options=['model.backbone.prompt_cfg.deep=False'])
    deep = write_sweep(tmp_path, 'd4', cfg, ['dmlab'], base=65.0)
    half = write_sweep(tmp_path, 'd2', cfg, ['dmlab'], base=63.0,
                       options=['model.backbone.prompt_cfg.layers=(1,2)'])
    depth = [load_sweep(p) for p in (shallow, deep, half)]
    return sweeps, lengths, depth


def test_curves_from_sweeps(tmp_path):
    sweeps, lengths, depth = make_sweeps(tmp_path)
    curves = fraction_curves(sweeps)
    assert sorted(curves) == ['cub', 'dmlab']
    assert sorted(curves['dmlab']['VPT-Deep']) == [
        (0.1, 52.0), (0.5, 56.0), (1.0, 61.0)]
    assert prompt_length_curves(lengths) == {
        'VPT-Deep': {'dmlab': [(1, 61.1), (10, 62.0), (50, 66.0)]}}
    assert prompt_length_curves(sweeps) == {}  # no prompt-length grid
    # Prompt depth: counted on the built backbone.
    assert [prompt_depth(s['spec']) for s in depth] == [1, 4, 2]
    assert depth_curves(depth) == {
        'tiny': {'dmlab': [(1.0, 61.0), (4.0, 66.0), (2.0, 64.0)]}}
    # Sweeps of two figures mixed: two points at one depth, refused.
    with pytest.raises(ValueError, match="both give 'dmlab' of 'tiny' at "
                       'x=4'):
        depth_curves(depth + sweeps[-1:])


@pytest.mark.slow
def test_sweep_curves_tool(tmp_path):
    """The tool draws each figure from its sweeps and says what it drew."""
    sweeps, lengths, depth = make_sweeps(tmp_path)
    out = str(tmp_path / 'curves')
    for figure, group, expected in (
            ('fraction', sweeps, 'fraction_dmlab.png: 1 curves, 3 points'),
            ('length', lengths, 'prompt_length_VPT-Deep.png: 1 curves, 3 '
             'points'),
            ('depth', depth, 'depth_tiny.png: 1 curves, 3 points')):
        proc = tool(figure, [s['path'] for s in group], out)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f'{out}/{expected}' in proc.stdout
        assert osp.getsize(f'{out}/{expected.split(":")[0]}') > 10000
    # Nothing to draw is an error that says what the figure needs.
    proc = tool('length', [sweeps[0]['path']], out)
    assert proc.returncode != 0 and 'two or more --num-tokens' in proc.stderr


def tool(figure, paths, out):
    import os
    return subprocess.run(
        [sys.executable, 'tools/analysis_tools/sweep_curves.py', figure,
         *paths, '--out-dir', out], cwd=REPO, capture_output=True,
        text=True, env=dict(os.environ, PYTHONPATH=REPO))


def test_class_colours_tell_neighbours_apart():
    """Neighbouring classes never get the two shades of one tab20 hue."""
    import matplotlib

    from vpt_mm.evaluation.figures import class_colours
    tab20 = [tuple(matplotlib.colormaps['tab20'](i)) for i in range(20)]
    for n in (2, 10, 16, 20):
        colours = class_colours(n)
        assert len(set(colours)) == n
        pairs = [tab20.index(c) // 2 for c in colours]
        assert all(a != b for a, b in zip(pairs, pairs[1:])), pairs
    assert len({tab20.index(c) // 2 for c in class_colours(10)}) == 10
