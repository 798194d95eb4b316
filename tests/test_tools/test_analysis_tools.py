"""The analysis tools on a real short VPT-Deep run of the demo config."""
import json
import os.path as osp
import sys

import pytest
from PIL import Image

from tests.test_tools.test_train import run, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('analysis')
    cfg = write_config(tmp, epochs=1)
    work = str(tmp / 'work')
    run([sys.executable, 'tools/train.py', cfg, '--work-dir', work])
    tuned = str(tmp / 'task.safetensors')
    run([sys.executable, 'tools/model_converters/extract_tuned.py', cfg,
         osp.join(work, 'epoch_1.pth'), tuned])
    return tmp, cfg, osp.join(work, 'epoch_1.pth'), tuned


def test_tsne_of_checkpoint_and_tuned_file(trained):
    """The same model from its training checkpoint and from its tuned-only
    file gives the same embeddings, hence the same t-SNE; the picture holds
    every embedded image, coloured by its class."""
    tmp, cfg, ckpt, tuned = trained
    results = []
    for name, source in (('ckpt', ckpt), ('tuned', tuned)):
        out = str(tmp / f'{name}.png')
        log = run([sys.executable, 'tools/analysis_tools/tsne.py', cfg,
                   source, '--out', out, '--max-samples', '60'])
        assert 'Saved the t-SNE of 60 embeddings (5 classes)' in log
        width, height = Image.open(out).size
        assert width > 300 and height > 300
        with open(str(tmp / f'{name}.json')) as f:
            results.append(json.load(f))
    assert len(results[0]['points']) == 60
    assert sorted(set(results[0]['labels'])) == [0, 1, 2, 3, 4]
    assert results[0] == results[1]
