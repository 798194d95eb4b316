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


def readme_demo_table():
    with open(osp.join(REPO, 'README.md')) as f:
        text = f.read()
    section = text[text.index('## Demo'):text.index('## Training and')]
    return [line for line in section.splitlines()
            if line.startswith('| ')]


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
    # The README quotes what a clean run prints, pre-training included.
    assert printed == readme_demo_table()
    pretrain = re.search(r'top-1 accuracy ([0-9.]+)%', proc.stdout).group(1)
    with open(osp.join(REPO, 'README.md')) as f:
        assert f'pre-training step reaches {pretrain}%' in f.read()
    out = osp.join(REPO, 'work_dirs', 'demo')
    with open(osp.join(out, 'table1.md')) as f:
        assert f.read().splitlines()[2:] == printed[1:]
    img = np.asarray(Image.open(osp.join(out, 'table1.png')).convert('RGB'))
    assert img.shape[0] > 200 and img.shape[1] > 400
    # One bar per protocol, each in its own tab10 colour.
    tab10 = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    for colour in tab10:
        assert (np.abs(img.astype(int) - colour).sum(-1) < 10).sum() > 500
