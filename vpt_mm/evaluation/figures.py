"""The paper's pictures: t-SNE of embeddings, bar charts of results, curves
from sweeps. Each function writes one PNG (matplotlib, Agg backend) and
returns what it drew, so callers and tests can check the picture reflects
its input."""
from __future__ import annotations

import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out: str) -> None:
    from ..fileio import atomic_save
    fmt = osp.splitext(out)[1].lstrip('.') or 'png'
    atomic_save(out, lambda tmp: fig.savefig(tmp, dpi=120,
                                             bbox_inches='tight',
                                             format=fmt))


def class_colours(n: int) -> list:
    """RGBA colours of up to 20 classes, each distinct and neighbours of
    different hues: tab20 holds 10 hues in dark/light pairs, so classes 0-9
    get the 10 hues (tab10) and classes 10-19 their light shades."""
    if n > 20:
        raise ValueError(f'{n} classes: more than 20 distinct colours')
    plt = _pyplot()
    tab20 = plt.get_cmap('tab20')
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return [tuple(tab20(i)) for i in order[:n]]


def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE (scikit-learn, PCA init) of (N, d) features.

    The perplexity is scikit-learn's default 30, lowered to (N - 1) / 3 for
    small sets (it must be below N).

    Raises:
        ValueError: With fewer than 4 samples.
    """
    from sklearn.manifold import TSNE
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 4:
        raise ValueError('t-SNE needs (N, d) features with N >= 4, got '
                         f'shape {features.shape}')
    perplexity = min(30.0, (len(features) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init='pca',
                random_state=seed).fit_transform(features)


def plot_tsne(points: np.ndarray,
              labels: Sequence[int],
              class_names: Optional[Sequence[str]],
              title: str,
              out: str) -> dict:
    """Scatter the 2-D points coloured by class (the paper's Fig. 11-12).

    A legend names the classes when there are at most 20 of them; more get a
    colour bar of class indices.

    Returns:
        dict: ``points`` (counted on the figure) and ``classes`` (distinct
        labels).
    """
    plt = _pyplot()
    labels = np.asarray(labels)
    classes = sorted(set(labels.tolist()))
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    if len(classes) <= 20:
        colours = class_colours(len(classes))
        for i, c in enumerate(classes):
            mask = labels == c
            name = class_names[c] if class_names is not None else str(c)
            ax.scatter(points[mask, 0], points[mask, 1], s=12,
                       color=colours[i], label=name)
        ax.legend(fontsize=7, markerscale=1.5, loc='best', title='class')
    else:
        sc = ax.scatter(points[:, 0], points[:, 1], s=8, c=labels,
                        cmap=plt.get_cmap('viridis'))
        fig.colorbar(sc, ax=ax, label='class index')
    ax.set_title(title, fontsize=10)
    ax.set_xlabel('t-SNE 1')
    ax.set_ylabel('t-SNE 2')
    _save(fig, out)
    drawn = [len(c.get_offsets()) for c in ax.collections]
    plt.close(fig)
    return dict(points=int(sum(drawn)), classes=len(classes))


def plot_bars(rows: Sequence[dict], title: str, ylabel: str,
              out: str) -> dict:
    """A bar per row (``name``, ``mean``, ``std``), with std error bars and
    the value written on each bar.

    Returns:
        dict: ``bars``, the number of bars on the figure.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 4))
    x = np.arange(len(rows))
    means = [r['mean'] for r in rows]
    bars = ax.bar(x, means, yerr=[r.get('std', 0.0) for r in rows],
                  capsize=4, color=plt.get_cmap('tab10')(x % 10))
    for bar, row in zip(bars, rows):
        ax.annotate(f'{row["mean"]:.1f}',
                    (bar.get_x() + bar.get_width() / 2,
                     bar.get_height() + row.get('std', 0.0)),
                    ha='center', va='bottom', fontsize=8,
                    xytext=(0, 3), textcoords='offset points')
    top = max(r['mean'] + r.get('std', 0.0) for r in rows)
    ax.set_ylim(0, top * 1.12 if top > 0 else 1)
    ax.set_xticks(x, [r['name'] for r in rows], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _save(fig, out)
    drawn = len(ax.patches)
    plt.close(fig)
    return dict(bars=drawn)


def plot_curves(curves: Dict[str, List[tuple]], title: str, xlabel: str,
                ylabel: str, out: str, log_x: bool = False) -> dict:
    """One line per curve name, through its ``(x, y)`` points (sorted by
    x).

    Returns:
        dict: ``curves`` and ``points`` on the figure.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, xy in sorted(curves.items()):
        xy = sorted(xy)
        ax.plot([p[0] for p in xy], [p[1] for p in xy], marker='o',
                label=name)
    if log_x:
        ax.set_xscale('log')
    xs = sorted({p[0] for xy in curves.values() for p in xy})
    if len(xs) <= 12:  # label the measured x values themselves
        ax.set_xticks(xs, [f'{x:g}' for x in xs])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    _save(fig, out)
    drawn = dict(curves=len(ax.lines),
                 points=sum(len(line.get_xdata()) for line in ax.lines))
    plt.close(fig)
    return drawn
