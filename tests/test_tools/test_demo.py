"""tools/demo.py as the docs show it (the README's and get_started.md's
block, run as written): 4 protocols x 3 seeds through tools/train.py, the
table it prints is get_started.md's within the stated tolerance, the bar
chart has a bar per protocol; then serving.md's prompt-ensemble block on
its outputs."""
import os.path as osp
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.doc_blocks import block, run_block
from tests.test_tools.test_train import REPO

GET_STARTED_PAGE = 'docs/en/get_started.md'

pytestmark = pytest.mark.slow


#: How far a protocol's mean may move from get_started.md's table on another
#: machine of this kind: float rounding differs between CPUs and compounds
#: over training (a second 2-core machine moved VPT-Deep's mean by 4.2
#: points, Full's by 0.9).
MEAN_TOLERANCE = 6.0
#: The same for the pre-training accuracy.
PRETRAIN_TOLERANCE = 3.0


GET_STARTED = osp.join(REPO, 'docs', 'en', 'get_started.md')


def docs_demo_table():
    """The table rows of get_started.md's Demo section."""
    with open(GET_STARTED) as f:
        text = f.read()
    section = text[text.index('## Demo'):]
    return [line for line in section.splitlines()
            if line.startswith('| ')]


def means(rows):
    """{protocol: mean} of markdown table rows (after the header)."""
    return {r.split(' | ')[0][2:]: float(r.split(' | ')[-1].split(' ± ')[0])
            for r in rows[1:]}


def test_demo_prints_the_docs_table(tmp_path):
    shutil.rmtree(osp.join(REPO, 'work_dirs', 'demo'), ignore_errors=True)
    # The README's block is get_started.md's.
    script = block(GET_STARTED_PAGE, 'Demo').text
    assert block('README.md', 'Demo').text.splitlines()[1:] == \
        script.splitlines()[1:] == ['python tools/demo.py']
    proc = subprocess.run(['bash', '-euo', 'pipefail', '-c', script],
                          cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    printed = [line[len('[demo] '):] for line in proc.stdout.splitlines()
               if line.startswith('[demo] | ')]
    assert len(printed) == 5  # header + 4 protocols
    assert [r.split(' | ')[0] for r in printed[1:]] == [
        '| Full', '| Linear', '| VPT-Shallow', '| VPT-Deep']
    # The README's claims, with the spread between machines of this kind:
    # its table within MEAN_TOLERANCE, full fine-tuning best by more than
    # 5 points, every protocol far above chance (20%).
    readme = docs_demo_table()
    assert printed[0] == readme[0] and len(printed) == len(readme)
    got, quoted = means(printed), means(readme)
    assert got.keys() == quoted.keys()
    for name in got:
        assert abs(got[name] - quoted[name]) <= MEAN_TOLERANCE, (name, got)
        assert got[name] > 60, (name, got)
    assert all(got['Full'] > got[n] + 5 for n in got if n != 'Full'), got
    pretrain = float(
        re.search(r'top-1 accuracy ([0-9.]+)%', proc.stdout).group(1))
    with open(GET_STARTED) as f:
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
    # serving.md's prompt-ensemble block, on the demo's outputs.
    out = run_block(block('docs/en/user_guides/serving.md',
                          'Prompt ensembles'), tmp_path)
    singles = [float(v) for v in re.findall(
        r'vpt-deep-seed[0-4].safetensors: top-1 ([0-9.]+)%', out)]
    assert len(singles) == 5, out[-2000:]
    ensemble = float(re.search(r'ensemble \(mean probs\) +([0-9.]+)%',
                               out).group(1))
    assert ensemble > np.mean(singles), (ensemble, singles)
