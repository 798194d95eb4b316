"""The pictures: each is written, readable and reflects its input."""
import numpy as np
from PIL import Image

from vpt_mm.evaluation.figures import (
    plot_bars,
    plot_curves,
    plot_tsne,
    tsne_embedding,
)


def colours(path):
    img = np.asarray(Image.open(path).convert('RGB'))
    return img.shape, len(np.unique(img.reshape(-1, 3), axis=0))


def test_tsne_separates_separable_classes(tmp_path):
    rng = np.random.RandomState(0)
    labels = np.repeat(np.arange(3), 20)
    feats = rng.randn(60, 16) * 0.1 + np.eye(16)[labels] * 5
    points = tsne_embedding(feats)
    assert points.shape == (60, 2)
    # Each class's points are nearer their own centroid than any other's.
    centres = np.stack([points[labels == c].mean(0) for c in range(3)])
    nearest = np.argmin(((points[:, None] - centres) ** 2).sum(-1), 1)
    assert (nearest == labels).all()
    out = str(tmp_path / 'tsne.png')
    drawn = plot_tsne(points, labels, ['a', 'b', 'c'], 'title', out)
    assert drawn == dict(points=60, classes=3)
    shape, n = colours(out)
    assert shape[0] > 300 and shape[1] > 300 and n > 10
    # Many classes: a colour bar instead of a legend; all points drawn.
    many = np.arange(60) % 30
    assert plot_tsne(points, many, None, 't', out)['points'] == 60


def test_bars_and_curves(tmp_path):
    rows = [dict(name=n, mean=m, std=s) for n, m, s in
            (('Full', 70.0, 1.0), ('Linear', 60.0, 0.5),
             ('VPT-Shallow', 65.0, 0.8), ('VPT-Deep', 72.0, 0.3))]
    out = str(tmp_path / 'bars.png')
    assert plot_bars(rows, 'Table 1', 'top-1 (%)', out) == dict(bars=4)
    assert colours(out)[1] > 5
    curves = {'VPT-Deep': [(0.1, 50.0), (0.5, 60.0), (1.0, 65.0)],
              'Full': [(1.0, 63.0), (0.1, 40.0)]}
    out = str(tmp_path / 'curve.png')
    assert plot_curves(curves, 't', 'fraction', 'top-1', out,
                       log_x=True) == dict(curves=2, points=5)
