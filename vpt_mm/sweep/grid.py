"""The grid of a sweep and the choice of its best point: what the paper's
protocol (Table 6) searches, how a grid point becomes a job's options, and
which point wins."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

#: The paper's grids (Table 6), here the base lr of VPT and linear probing;
#: FULL_LRS and WEIGHT_DECAYS are the others.
VPT_LRS = (50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05)
FULL_LRS = (0.001, 0.0005, 0.0001, 0.005)
WEIGHT_DECAYS = (0.01, 0.001, 0.0001, 0.0)


@dataclass
class SweepSpec:
    """What defines a sweep; a restart must give the same values.

    Attributes:
        config (str): Benchmark config (VTAB-1k or FGVC).
        lrs (list[float]): Base learning rates (scaled by total batch / 256
            by the config's ``auto_scale_lr``).
        weight_decays (list[float]): Weight decays.
        num_tokens (list[int]): Prompt lengths to try; empty keeps the
            config's.
        train_fraction (float, optional): Seeded fraction of the training
            split (data-size study); None uses all of it.
        fraction_seed (int): Seed of ``train_fraction``.
        cfg_options (list[str]): ``key=value`` overrides for every job.
    """
    config: str
    lrs: List[float]
    weight_decays: List[float]
    num_tokens: List[int] = field(default_factory=list)
    train_fraction: Optional[float] = None
    fraction_seed: int = 0
    cfg_options: List[str] = field(default_factory=list)


def fmt_value(value: float) -> str:
    """A grid value as it appears in folder names and options: 2.5, 1e-05."""
    return f'{value:g}'


def grid(spec: SweepSpec) -> List[Dict[str, float]]:
    """The tuning grid: ``dict(lr=, weight_decay=[, num_tokens=])``."""
    points = []
    for lr in spec.lrs:
        for wd in spec.weight_decays:
            for p in (spec.num_tokens or [None]):
                point = dict(lr=float(lr), weight_decay=float(wd))
                if p is not None:
                    point['num_tokens'] = int(p)
                points.append(point)
    return points


def point_name(point: Dict[str, float]) -> str:
    """Folder name of a grid point, e.g. ``lr2.5_wd0.0001_p10``."""
    name = f'lr{fmt_value(point["lr"])}_wd{fmt_value(point["weight_decay"])}'
    if 'num_tokens' in point:
        name += f'_p{int(point["num_tokens"])}'
    return name


def select_best(scores: Sequence[dict]) -> dict:
    """The best grid point: highest score; ties to the smaller lr, then the
    larger weight decay (as the official tuning script, which visits weight
    decays from large to small and keeps the first of equal scores at one
    lr), then the shorter prompt.

    Args:
        scores (Sequence[dict]): Grid points with a ``top1`` score; points
            whose ``top1`` is None (diverged) are never chosen.

    Returns:
        dict: The chosen grid point (with its ``top1``).
    """
    scores = [s for s in scores if s.get('top1') is not None]
    if not scores:
        raise ValueError('No scored grid point to select from')
    return min(
        scores,
        key=lambda s: (-s['top1'], s['lr'], -s['weight_decay'],
                       s.get('num_tokens', 0)))


def overrides(point: Dict[str, float], splits: Tuple[str, str],
              spec: SweepSpec, seed: int) -> List[str]:
    """``--cfg-options`` of one job."""
    train_split, score_split = splits
    opts = [
        f'train_dataloader.dataset.split={train_split}',
        f'test_dataloader.dataset.split={score_split}',
        f'optim_wrapper.optimizer.lr={fmt_value(point["lr"])}',
        f'optim_wrapper.optimizer.weight_decay={fmt_value(point["weight_decay"])}',
        f'randomness.seed={seed}',
    ]
    if 'num_tokens' in point:
        opts.append('model.backbone.prompt_cfg.num_tokens='
                    f'{int(point["num_tokens"])}')
    if spec.train_fraction is not None:
        opts += [
            f'train_dataloader.dataset.train_fraction={spec.train_fraction}',
            f'train_dataloader.dataset.fraction_seed={spec.fraction_seed}',
        ]
    return opts + list(spec.cfg_options)
