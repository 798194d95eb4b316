"""tools/demo.py as the README shows it: 4 protocols x 3 seeds through
tools/train.py, the table it prints is the README's, the bar chart has a
bar per protocol."""
import os.path as osp
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.test_tools.test_train import REPO

pytestmark = pytest.mark.slow


#: How far a protocol's mean may move from the README's table on another
#: machine of this kind: float rounding differs between CPUs and compounds
#: over training (a second 2-core machine moved VPT-Deep's mean by 4.2
#: points, Full's by 0.9).
MEAN_TOLERANCE = 6.0
#: The same for the pre-training accuracy.
PRETRAIN_TOLERANCE = 3.0


def readme_demo_table():
    with open(osp.join(REPO, 'README.md')) as f:
        text = f.read()
    section = text[text.index('## Demo'):text.index('## Training and')]
    return [line for line in section.splitlines()
            if line.startswith('| ')]


def means(rows):
    """{protocol: mean} of markdown table rows (after the header)."""
    return {r.split(' | ')[0][2:]: float(r.split(' | ')[-1].split(' ± ')[0])
            for r in rows[1:]}


def test_demo_prints_the_readme_table():
    shutil.rmtree(osp.join(REPO, 'work_dirs', 'demo'), ignore_errors=True)
    proc = subprocess.run([sys.executable, 'tools/demo.py'], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    printed = [line[len('[demo] '):] for line in proc.stdout.splitlines()
               if line.startswith('[demo] | ')]
    assert len(printed) == 5  # header + 4 protocols
    assert [r.split(' | ')[0] for r in printed[1:]] == [
        '| Full', '| Linear', '| VPT-Shallow', '| VPT-Deep']
    # The README's claims, with the spread between machines of this kind:
    # its table within MEAN_TOLERANCE, full fine-tuning best by more than
    # 5 points, every protocol far above chance (20%).
    readme = readme_demo_table()
    assert printed[0] == readme[0] and len(printed) == len(readme)
    got, quoted = means(printed), means(readme)
    assert got.keys() == quoted.keys()
    for name in got:
        assert abs(got[name] - quoted[name]) <= MEAN_TOLERANCE, (name, got)
        assert got[name] > 60, (name, got)
    assert all(got['Full'] > got[n] + 5 for n in got if n != 'Full'), got
    pretrain = float(
        re.search(r'top-1 accuracy ([0-9.]+)%', proc.stdout).group(1))
    with open(osp.join(REPO, 'README.md')) as f:
        quoted_pretrain = float(re.search(
            r'pre-training step reaches ([0-9.]+)%', f.read()).group(1))
    assert abs(pretrain - quoted_pretrain) <= PRETRAIN_TOLERANCE
    out = osp.join(REPO, 'work_dirs', 'demo')
    with open(osp.join(out, 'table1.md')) as f:
        assert f.read().splitlines()[2:] == printed[1:]
    img = np.asarray(Image.open(osp.join(out, 'table1.png')).convert('RGB'))
    assert img.shape[0] > 200 and img.shape[1] > 400
    # One bar per protocol, each in its own tab10 colour.
    tab10 = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    for colour in tab10:
        assert (np.abs(img.astype(int) - colour).sum(-1) < 10).sum() > 500
