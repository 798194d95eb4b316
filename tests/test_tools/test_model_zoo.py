"""docs/en/model_zoo.md is tools/analysis_tools/model_zoo.py's output, and
its counts are the ones the other tools print."""
import importlib.util
import os.path as osp

import pytest

from tests.test_tools.test_train import REPO

PAGE = osp.join(REPO, 'docs', 'en', 'model_zoo.md')


def zoo():
    spec = importlib.util.spec_from_file_location(
        'model_zoo', osp.join(REPO, 'tools', 'analysis_tools',
                              'model_zoo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed_row(config: str) -> str:
    """The page's row of ``configs/<folder>/<name>.py``, in that folder's
    section."""
    folder, name = config.split('/')[-2:]
    with open(PAGE) as f:
        text = f.read()
    start = text.index(f'(`configs/{folder}/`)')
    section = text[start:text.find('\n## ', start)]
    rows = [line for line in section.splitlines()
            if line.startswith(f'| `{name}` |')]
    assert len(rows) == 1, config
    return rows[0]


@pytest.mark.parametrize('config', ['configs/vtab/vpt_deep_vit-b.py',
                                    'configs/vtab/mlp-3_vit-b.py',
                                    'configs/fgvc/vpt_shallow_swin-b.py',
                                    'configs/demo/vpt-deep_vit-tiny_digits-'
                                    '5to9.py'])
def test_rows_are_the_tools_output(config):
    module = zoo()
    row = module.row(osp.join(REPO, config))
    assert module.table([row])[2] == committed_row(config)


def test_counts_agree_with_the_parameter_table():
    """The paper's Table 1 accounting (param_table.py, the docs' tuning
    page): VPT-Deep p=50 tunes 460,800 (0.53%), Mlp-3 1,184,256 (1.38%),
    and the VPT-Deep training checkpoint is the 4.32 MB count_params.py
    prints."""
    assert '| 460,800 (0.53%) | 76,900 | 2.15 MB | 4.32 MB |' in \
        committed_row('configs/vtab/vpt_deep_vit-b.py')
    assert '| 1,184,256 (1.38%) |' in committed_row(
        'configs/vtab/mlp-3_vit-b.py')
    assert '78.48 / 82.43 / 54.98' in committed_row(
        'configs/vtab/vpt_deep_vit-b.py')


def test_every_config_has_a_row():
    module = zoo()
    for path in module.all_configs():
        committed_row(osp.relpath(path, REPO))


@pytest.mark.slow
def test_page_is_the_tools_output():
    module = zoo()
    with open(PAGE) as f:
        assert f.read() == module.page(module.all_configs())
