"""The docs as a user meets them: every shell block is marked with where
it runs, the CPU blocks run as written, the CI blocks are what .ci/run
runs, every internal link resolves, every docstring example runs, the
README stays short, the own-dataset config works with the other model
bases."""
import doctest
import importlib
import json
import os.path as osp
import pkgutil
import re

import pytest

from tests.doc_blocks import REPO, all_blocks, block, pages, run_block

TRAIN_TEST = 'docs/en/user_guides/train_test.md'
SEGMENTATION = 'docs/en/user_guides/segmentation.md'
OWN_DATASET = 'docs/en/user_guides/own_dataset.md'
#: Every CPU block and the test that runs it as written and checks what
#: the page claims about it.
DEDICATED = {
    'README.md#Demo[0]':
    'tests/test_tools/test_demo.py::test_demo_prints_the_docs_table',
    'docs/en/get_started.md#Demo (under 2 minutes on 2 CPU cores)[0]':
    'tests/test_tools/test_demo.py::test_demo_prints_the_docs_table',
    'docs/en/user_guides/serving.md#Prompt ensembles[0]':
    'tests/test_tools/test_demo.py::test_demo_prints_the_docs_table',
    f'{TRAIN_TEST}#CPU smoke tests (every config family, no checkpoint, '
    'no dataset)[0]': 'tests/test_docs.py::test_train_test_smoke_block_runs',
    f'{SEGMENTATION}#CPU smoke: the UperNet recipes (random backbone, 2 '
    'iterations)[0]': 'tests/test_docs.py::test_upernet_smoke_block_runs',
    f'{OWN_DATASET}#The whole path on a CPU[0]':
    'tests/test_docs.py::test_own_dataset_block_runs',
    'docs/en/get_started.md#Verify the install[0]':
    'tests/test_docs.py::test_verify_block_prints_what_the_page_says',
}
CPU_BLOCKS = [b for b in all_blocks() if b.marker == '# CPU:']


def test_every_shell_block_says_where_it_runs():
    unmarked = [b.name for b in all_blocks() if not b.marker]
    assert not unmarked, (
        f'shell blocks without a "# CPU:", "# CI:", "# GPU:", "# Needs" or '
        f'"# Synopsis" first line: {unmarked}')
    assert len(CPU_BLOCKS) >= 6


def test_every_cpu_block_has_its_test():
    names = {b.name for b in CPU_BLOCKS}
    untested = sorted(names - set(DEDICATED))
    assert not untested, ('CPU blocks no test runs (add each to DEDICATED '
                          f'with its test): {untested}')
    for name, test in DEDICATED.items():
        assert name in names, f'{name} is no longer a CPU block'
        path, func = test.split('::')
        with open(osp.join(REPO, path)) as f:
            assert f'def {func}(' in f.read(), test


def test_ci_blocks_are_what_ci_runs():
    with open(osp.join(REPO, '.ci', 'run')) as f:
        ci = f.read().splitlines()
    for b in all_blocks():
        if b.marker != '# CI:':
            continue
        for line in b.text.splitlines()[1:]:
            assert line in ci, f'{b.name}: .ci/run does not run {line!r}'


def test_readme_is_short():
    with open(osp.join(REPO, 'README.md')) as f:
        assert len(f.read().splitlines()) < 150


def slug(heading: str) -> str:
    """The anchor of a heading, as myst-parser and GitHub make it."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
    return text.replace(' ', '-')


def anchors(page: str) -> set:
    with open(page) as f:
        text = re.sub(r'^```.*?^```', '', f.read(), flags=re.M | re.S)
    return {slug(h) for h in re.findall(r'^#{1,6} (.+)$', text, re.M)}


def test_internal_links_resolve():
    bad = []
    for page in pages():
        path = osp.join(REPO, page)
        with open(path) as f:
            text = re.sub(r'^```.*?^```', '', f.read(), flags=re.M | re.S)
        for target in re.findall(r'\]\(([^)\s]+)\)', text):
            if re.match(r'[a-z]+:', target):
                continue  # http(s), mailto
            file, _, anchor = target.partition('#')
            dest = osp.normpath(osp.join(osp.dirname(path), file)) \
                if file else path
            if not osp.exists(dest):
                bad.append(f'{page}: {target} (no such file)')
            elif anchor and dest.endswith('.md') and \
                    anchor not in anchors(dest):
                bad.append(f'{page}: {target} (no such heading)')
    assert not bad, bad


def test_every_page_is_in_a_toctree():
    with open(osp.join(REPO, 'docs', 'en', 'index.md')) as f:
        index = f.read()
    for page in pages():
        if page.startswith('docs/en/') and page != 'docs/en/index.md':
            assert page[len('docs/en/'):-len('.md')] in index, page


def vpt_mm_modules():
    import vpt_mm
    yield 'vpt_mm'
    for info in pkgutil.walk_packages(vpt_mm.__path__, 'vpt_mm.'):
        yield info.name


@pytest.mark.parametrize('name', sorted(vpt_mm_modules()))
def test_docstring_examples_run(name):
    """The ``Examples:`` of every public docstring, as doctests."""
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, name):
        if test.name.split('.')[-1].startswith('_'):
            continue
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0, name


@pytest.mark.parametrize('base', ['vpt_swin-b.py', 'vpt_convnext-b.py',
                                  'vpt_resnet-50.py'])
def test_own_dataset_config_takes_other_model_bases(tmp_path, base):
    """own_dataset.md: another model base of configs/_base_/models/ gives
    that backbone with the same data and a 3-class head."""
    from mmengine.registry import MODELS

    from vpt_mm.config import resolve_config
    src = osp.join(REPO, 'configs', 'custom', 'vpt_deep_vit-b_imagefolder.py')
    with open(src) as f:
        text = f.read().replace('vpt_vit-b16.py', base)
    text = text.replace("'../_base_/", f"'{REPO}/configs/_base_/")
    path = tmp_path / 'cfg.py'
    path.write_text(text)
    cfg = resolve_config(str(path))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert model.head.num_classes == 3
    assert type(model.backbone).__name__.startswith('Prompted')
    assert cfg.train_dataloader.dataset.type == 'CustomDataset'


@pytest.mark.slow
def test_verify_block_prints_what_the_page_says(tmp_path):
    """get_started.md's verification: the version, and VPT-Deep ViT-B/16's
    460,800 prompt parameters, 0.53% of 85,798,656."""
    import vpt_mm
    out = run_block(block('docs/en/get_started.md', 'Verify the install'),
                    tmp_path)
    assert f'vpt_mm {vpt_mm.__version__}' in out
    assert re.search(r'backbone .*85,798,656', out), out[-2000:]
    assert re.search(r'tuned: prompt +460,800 +0\.53%', out), out[-2000:]


@pytest.mark.slow
def test_own_dataset_block_runs(tmp_path):
    """own_dataset.md's CPU block: the whole path on a generated
    ImageFolder; the tuned file tests as its checkpoint does, and the
    predictions carry the folder names."""
    out = run_block(block(OWN_DATASET, 'The whole path on a CPU'), tmp_path)
    scores = re.findall(r'Epoch\(test\).*?accuracy/top1: ([0-9.]+)', out)
    assert len(scores) == 2 and scores[0] == scores[1], scores
    preds = json.loads(
        (tmp_path / 'work' / 'my_dataset' / 'preds.json').read_text())
    assert len(preds) == 6
    assert {r['my_dataset']['pred_class'] for r in preds.values()} <= {
        'bird', 'cat', 'dog'}


@pytest.mark.slow
def test_train_test_smoke_block_runs(tmp_path):
    """train_test.md's CPU smoke block: every config family, and the
    whole path of a VTAB task."""
    script = block(TRAIN_TEST, 'CPU smoke tests').text
    assert script.count('tools/train.py') == 3
    for step in ('standin_checkpoint.py', 'tools/test.py',
                 'extract_tuned.py', 'tools/infer.py'):
        assert step in script, step
    out = run_block(block(TRAIN_TEST, 'CPU smoke tests'), tmp_path)
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


@pytest.mark.slow
def test_upernet_smoke_block_runs(tmp_path):
    """segmentation.md's UperNet smoke block (mmseg's own recipes with
    PromptedSwin and PromptedConvNeXt, ConvNeXt's AMP in bfloat16 on the
    CPU), run as written."""
    script = block(SEGMENTATION, 'CPU smoke: the UperNet recipes').text
    assert script.count('configs/upernet/') == 1 and 'for c in' in script
    out = run_block(block(SEGMENTATION, 'CPU smoke: the UperNet'), tmp_path)
    for name in ('vpt_deep_swin-b_ade20k', 'vpt_convnext-b_ade20k'):
        assert (tmp_path / 'work' / name / 'iter_2.pth').exists(), name
    assert out.count('mIoU') >= 2
    assert 'it is CPUAmpOptimWrapper' in out
