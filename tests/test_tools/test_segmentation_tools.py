"""SETR-PUP on a tiny generated ADE20K through tools/train.py,
tools/test.py (single-scale and --tta), the tuned-only checkpoint, and
tools/dist_train.sh with 2 gloo processes."""
import json
import os.path as osp
import sys

import pytest
import torch

from tests.seg_configs import (
    build_seg_model,
    write_pretrained,
    write_seg_config,
)
from tests.test_tools.test_train import run
from vpt_mm.checkpoints import frozen_fingerprint
from vpt_mm.datasets.synthetic import make_ade20k_layout

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def ade(tmp_path_factory):
    root = tmp_path_factory.mktemp('ade')
    data_root = make_ade20k_layout(str(root))
    ckpt = write_pretrained(str(root / 'vit.pth'))
    cfg = write_seg_config(str(root / 'vpt_deep.py'), 'vpt_deep', ckpt,
                           data_root)
    return root, cfg


def test_train_test_and_tuned_checkpoint(ade, tmp_path):
    _, cfg = ade
    work = str(tmp_path / 'work')
    log = run([sys.executable, 'tools/train.py', cfg, '--work-dir', work])
    assert 'Iter(val) [2/2]' in log and 'mIoU' in log
    # Frozen parameters never reach the optimizer: one line, not 148.
    assert 'is skipped since its requires_grad' not in log
    assert 'frozen parameter tensors' in log
    ckpt = osp.join(work, 'iter_4.pth')
    # The checkpoint holds the prompts and heads, not the frozen backbone,
    # and records the fingerprint of the backbone it trained on: the
    # pretrained one (position embedding resized), unchanged by training.
    _, fresh = build_seg_model(cfg)
    saved = torch.load(ckpt)
    state = saved['state_dict']
    assert {k for k in state if k.startswith('backbone.')} == {
        'backbone.prompt.embeddings'}
    assert {k for k in state if 'decode_head.' in k}
    assert saved['meta']['vpt_mm']['backbone_fingerprint'] == \
        frozen_fingerprint(fresh)
    assert not torch.equal(state['backbone.prompt.embeddings'],
                           fresh.backbone.prompt.embeddings)

    full = str(tmp_path / 'full.json')
    run([sys.executable, 'tools/test.py', cfg, ckpt, '--out', full,
         '--work-dir', work])
    tuned = str(tmp_path / 'tuned.safetensors')
    run([sys.executable, 'tools/model_converters/extract_tuned.py', cfg,
         ckpt, tuned])
    only = str(tmp_path / 'only.json')
    run([sys.executable, 'tools/test.py', cfg, tuned, '--out', only,
         '--work-dir', work])
    metrics = json.load(open(full))
    assert {'aAcc', 'mIoU', 'mAcc'} <= set(metrics)
    assert json.load(open(only)) == metrics

    tta = str(tmp_path / 'tta.json')
    log = run([sys.executable, 'tools/test.py', cfg, tuned, '--tta',
               '--out', tta, '--work-dir', work])
    assert 'mIoU' in json.load(open(tta))


def test_dist_train_two_gloo_processes(ade, tmp_path):
    _, cfg = ade
    work = str(tmp_path / 'work')
    log = run(['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir', work],
              timeout=600)
    assert 'Distributed training is not used' not in log
    assert 'SyncBN needs CUDA' in log
    assert 'mIoU' in log
    assert osp.exists(osp.join(work, 'iter_4.pth'))


def test_setr_on_a_timm_dinov2(tmp_path):
    """configs/setr/vpt_deep_dinov2-b14_ade20k.py with a tiny random DINOv2
    (14-pixel patches; its file in timm's layout) trains, tests and
    extracts a tuned file that tests the same."""
    import timm
    from safetensors.torch import save_file

    data_root = make_ade20k_layout(str(tmp_path / 'ade'))
    tiny = dict(depth=4, embed_dim=32, num_heads=2)
    torch.manual_seed(0)
    source = timm.create_model('vit_base_patch14_reg4_dinov2',
                               pretrained=False, img_size=56, **tiny)
    ckpt = str(tmp_path / 'model.safetensors')
    save_file({k: v.contiguous() for k, v in source.state_dict().items()},
              ckpt)
    test_pipeline = """
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(84, 56), keep_ratio=False),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
"""
    cfg = write_seg_config(
        str(tmp_path / 'dinov2.py'), 'vpt_deep', ckpt, data_root,
        extra=test_pipeline, arch=dict(embed_dims=32),
        backbone=f'img_size=crop_size, timm_kwargs={tiny!r}',
        config='vpt_deep_dinov2-b14_ade20k.py', crop=56)
    work = str(tmp_path / 'work')
    log = run([sys.executable, 'tools/train.py', cfg, '--work-dir', work])
    assert 'mIoU' in log
    state = torch.load(osp.join(work, 'iter_4.pth'))['state_dict']
    assert {k for k in state if k.startswith('backbone.')} == {
        'backbone.prompt.embeddings'}
    tuned = str(tmp_path / 'tuned.safetensors')
    run([sys.executable, 'tools/model_converters/extract_tuned.py', cfg,
         osp.join(work, 'iter_4.pth'), tuned])
    outs = [str(tmp_path / 'a.json'), str(tmp_path / 'b.json')]
    for path, out in zip((osp.join(work, 'iter_4.pth'), tuned), outs):
        run([sys.executable, 'tools/test.py', cfg, path, '--out', out,
             '--work-dir', work])
    with open(outs[0]) as a, open(outs[1]) as b:
        assert json.load(a) == json.load(b)
