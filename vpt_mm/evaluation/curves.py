"""Curves from sweep folders (the paper's Fig. 3, 6 and 7).

A sweep folder (``tools/sweep.py``) holds ``sweep.json`` (its protocol:
config, grids, ``train_fraction``, options), ``records.json`` (the final
runs' test top-1 per task and seed) and ``<task>/best.json`` (every grid
point's validation top-1). From several of them:

- :func:`fraction_curves`: test top-1 (mean over seeds) against the
  training-data fraction, one curve per method, per task (Fig. 3);
- :func:`prompt_length_curves`: validation top-1 against the prompt
  length, the best over learning rate and weight decay at each length, one
  curve per task, per method (Fig. 6);
- :func:`depth_curves`: the chosen validation top-1 against the number of
  prompted layers of each sweep's config, one curve per task, per config
  (Fig. 7).
"""
from __future__ import annotations

import glob
import json
import os.path as osp
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

Curves = Dict[str, Dict[str, List[Tuple[float, float]]]]


def load_sweep(path: str) -> dict:
    """A sweep folder's ``spec`` (sweep.json), ``records`` (records.json,
    empty if the sweep has not finished) and ``best`` (``{task:
    best.json}``).

    Raises:
        FileNotFoundError: If ``path`` has no ``sweep.json``.
    """
    spec_file = osp.join(path, 'sweep.json')
    if not osp.isfile(spec_file):
        raise FileNotFoundError(f'{path} is not a sweep folder (no '
                                'sweep.json)')
    with open(spec_file) as f:
        spec = json.load(f)
    records = []
    if osp.isfile(osp.join(path, 'records.json')):
        with open(osp.join(path, 'records.json')) as f:
            records = json.load(f)
    best = {}
    for file in sorted(glob.glob(osp.join(path, '*', 'best.json'))):
        with open(file) as f:
            entry = json.load(f)
        best[entry['task']] = entry
    return dict(path=path, spec=spec, records=records, best=best)


def _mean_test(records: Sequence[dict]) -> Dict[Tuple[str, str], float]:
    """Mean test top-1 over seeds per (method, task); a task with a failed
    seed has no value."""
    runs = defaultdict(list)
    for r in records:
        runs[(r['method'], r['task'])].append(r['top1'])
    return {k: float(np.mean(v)) for k, v in runs.items()
            if None not in v}


def _add(curves: Curves, outer: str, inner: str, x: float, y: float,
         sweep: dict, seen: dict) -> None:
    """Add a point, refusing a second point at the same x of one curve."""
    key = (outer, inner, x)
    if key in seen:
        raise ValueError(
            f'{seen[key]} and {sweep["path"]} both give {inner!r} of '
            f'{outer!r} at x={x:g}: pass the sweeps of one figure only')
    seen[key] = sweep['path']
    curves[outer][inner].append((x, y))


def fraction_curves(sweeps: Sequence[dict]) -> Curves:
    """``{task: {method: [(fraction, mean test top-1)]}}``; a sweep without
    ``train_fraction`` is at 1.0.

    Raises:
        ValueError: If two sweeps give the same method and task at one
            fraction.
    """
    curves: Curves = defaultdict(lambda: defaultdict(list))
    seen: dict = {}
    for sweep in sweeps:
        fraction = float(sweep['spec'].get('train_fraction') or 1.0)
        for (method, task), top1 in _mean_test(sweep['records']).items():
            _add(curves, task, method, fraction, top1, sweep, seen)
    return {t: dict(c) for t, c in curves.items()}


def prompt_length_curves(sweeps: Sequence[dict]) -> Curves:
    """``{method: {task: [(prompt length, best validation top-1)]}}`` of
    the sweeps whose grid has two or more prompt lengths."""
    curves: Curves = {}
    for sweep in sweeps:
        method = _method(sweep)
        for task, best in sweep['best'].items():
            per_p: Dict[int, float] = {}
            for score in best.get('scores', []):
                if 'num_tokens' not in score or score['top1'] is None:
                    continue
                p = int(score['num_tokens'])
                per_p[p] = max(per_p.get(p, -1.0), float(score['top1']))
            if len(per_p) >= 2:
                curves.setdefault(method, {})[task] = sorted(per_p.items())
    return curves


def _method(sweep: dict) -> str:
    methods = {r['method'] for r in sweep['records']}
    if len(methods) == 1:
        return methods.pop()
    return osp.splitext(osp.basename(sweep['spec']['config']))[0]


def prompt_depth(spec: dict) -> int:
    """The number of prompted layers (blocks, for Swin) of a sweep's
    config with its options: the backbone is built (randomly initialised)
    and its prompt modules counted.

    Raises:
        ValueError: If the backbone has no layer-wise prompts (the ConvNets'
            pixel frame has no depth).
    """
    from mmengine.registry import MODELS

    from ..config import config_from_file, parse_cfg_options
    cfg = config_from_file(spec['config'],
                           parse_cfg_options(spec.get('cfg_options', [])))
    backbone_cfg = cfg.model.backbone.copy()
    backbone_cfg.pop('init_cfg', None)
    backbone = MODELS.build(backbone_cfg)
    layers = [len(m.layer_ids) for m in backbone.modules()
              if hasattr(m, 'layer_ids')]
    if not layers:
        raise ValueError(f'{spec["config"]}: {type(backbone).__name__} has '
                         'no layer-wise prompts, hence no prompt depth')
    return int(sum(layers))


def depth_curves(sweeps: Sequence[dict],
                 depth_of: Optional[Callable[[dict], int]] = None) -> Curves:
    """``{config: {task: [(prompt depth, chosen validation top-1)]}}``:
    sweeps of one config at several depths (e.g. ``--cfg-options
    model.backbone.prompt_cfg.layers="(1, 6)"``).

    Raises:
        ValueError: If two sweeps give the same config and task at one
            depth.
    """
    depth_of = depth_of or prompt_depth
    curves: Curves = defaultdict(lambda: defaultdict(list))
    seen: dict = {}
    for sweep in sweeps:
        chosen = {t: b['chosen'] for t, b in sweep['best'].items()
                  if b.get('chosen')}
        if not chosen:
            continue
        name = osp.splitext(osp.basename(sweep['spec']['config']))[0]
        depth = depth_of(sweep['spec'])
        for task, point in chosen.items():
            _add(curves, name, task, float(depth), float(point['top1']),
                 sweep, seen)
    return {n: {t: v for t, v in c.items() if len(v) >= 2}
            for n, c in curves.items()
            if any(len(v) >= 2 for v in c.values())}
