"""The README's CPU smoke tests, run as written: every config family at its
real backbone size on generated data, without a checkpoint."""
import os
import os.path as osp
import re
import subprocess

import pytest

from tests.test_tools.test_train import REPO

pytestmark = pytest.mark.slow
HEADING = '### CPU smoke tests'


def readme_block(heading: str) -> str:
    """The first ```bash block after ``heading`` in the README."""
    with open(osp.join(REPO, 'README.md')) as f:
        text = f.read()
    start = text.index(heading)
    match = re.search(r'```bash\n(.*?)```', text[start:], re.S)
    assert match, f'no bash block after {heading!r}'
    return match.group(1)


def test_readme_smoke_block_runs(tmp_path):
    import json
    script = readme_block(HEADING)
    assert script.count('tools/train.py') == 3
    for step in ('standin_checkpoint.py', 'tools/test.py',
                 'extract_tuned.py', 'tools/infer.py'):
        assert step in script, step
    script = script.replace('data/smoke', str(tmp_path / 'data')).replace(
        'work_dirs/smoke', str(tmp_path / 'work'))
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(['bash', '-euo', 'pipefail', '-c', script],
                          cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=1200)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    work = tmp_path / 'work'
    for name in ('vtab', 'vpt_shallow_vit-b', 'vpt_deep_swin-b',
                 'vpt_convnext-b', 'vpt_resnet-50'):
        assert (work / name / 'epoch_1.pth').exists(), name
    assert (work / 'setr' / 'iter_2.pth').exists()
    assert out.count('accuracy/top1') >= 7 and 'mIoU' in out
    # Every classification epoch trained at a non-zero lr.
    lrs = [float(v) for v in re.findall(r'Epoch\(train\) +\[1\]\[.*?'
                                        r'lr: ([0-9.e+-]+)', out)]
    assert lrs and min(lrs) > 0, lrs
    # The tuned file scores what its training checkpoint scored.
    scores = re.findall(r'Epoch\(test\).*?accuracy/top1: ([0-9.]+)', out)
    assert len(scores) >= 2 and scores[0] == scores[1], scores
    preds = json.loads((work / 'vtab' / 'preds.json').read_text())
    assert preds and all('dmlab' in row for row in preds.values())


def test_readme_upernet_smoke_block_runs(tmp_path):
    """The README's UperNet smoke block (mmseg's own recipes with
    PromptedSwin and PromptedConvNeXt, ConvNeXt's AMP in bfloat16 on the
    CPU), run as written."""
    script = readme_block('### CPU smoke: the UperNet recipes')
    assert script.count('configs/upernet/') == 1 and 'for c in' in script
    script = script.replace('data/smoke', str(tmp_path / 'data')).replace(
        'work_dirs/smoke', str(tmp_path / 'work'))
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(['bash', '-euo', 'pipefail', '-c', script],
                          cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for name in ('vpt_deep_swin-b_ade20k', 'vpt_convnext-b_ade20k'):
        assert (tmp_path / 'work' / name / 'iter_2.pth').exists(), name
    assert out.count('mIoU') >= 2
    assert 'it is CPUAmpOptimWrapper' in out
