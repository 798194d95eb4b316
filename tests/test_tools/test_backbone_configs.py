"""The Swin, ConvNeXt and ResNet VTAB-1k configs through tools/train.py on
a tiny generated copy of their default task (cifar100), with small-arch
overrides of the real configs."""
import os.path as osp
import sys

import pytest
import torch
from mmpretrain.models.backbones import ConvNeXt, ResNet, SwinTransformer
from mmpretrain.registry import MODELS

from tests.test_tools.test_train import REPO, run
from vpt_mm.checkpoints import frozen_fingerprint
from vpt_mm.config import config_from_file
from vpt_mm.datasets.synthetic import make_vtab_task

pytestmark = pytest.mark.slow

SWIN = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4])
# config, small plain parent (the 'pretrained' checkpoint), backbone
# override, head width
CASES = {
    'vpt_shallow_swin-b':
    (lambda: SwinTransformer(arch=SWIN, out_indices=(3, )),
     f'arch=dict(_delete_=True, **{SWIN!r})', 128),
    'vpt_deep_swin-b': (lambda: SwinTransformer(arch=SWIN, out_indices=(3, )),
                        f'arch=dict(_delete_=True, **{SWIN!r})', 128),
    'vpt_convnext-b': (lambda: ConvNeXt(arch='atto'), "arch='atto'", 320),
    'vpt_resnet-50': (lambda: ResNet(depth=18), 'depth=18', 512),
}


@pytest.fixture(scope='module')
def cifar100(tmp_path_factory):
    root = tmp_path_factory.mktemp('vtab')
    make_vtab_task(str(root), 'cifar100', train=1, val=0, test=1)
    return str(root)


@pytest.mark.parametrize('name', sorted(CASES))
def test_vtab_config_trains_on_cpu(cifar100, tmp_path, name):
    make_parent, override, width = CASES[name]
    parent = make_parent()
    ckpt = str(tmp_path / 'pretrained.pth')
    torch.save(dict(state_dict=parent.state_dict()), ckpt)
    config = osp.join(REPO, 'configs', 'vtab', f'{name}.py')
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f"""
_base_ = [{config!r}]
model = dict(backbone=dict({override},
                           init_cfg=dict(checkpoint={ckpt!r})),
             head=dict(in_channels={width}))
data_root = {cifar100!r}
loader = dict(batch_size=25, num_workers=0, persistent_workers=False,
              pin_memory=False, dataset=dict(data_root=data_root))
train_dataloader = loader
val_dataloader = loader
test_dataloader = loader
train_cfg = dict(max_epochs=1, val_interval=1)
param_scheduler = []
# Whole checkpoints, to compare the frozen tensors themselves.
default_hooks = dict(checkpoint=dict(save_frozen=True))
""")
    work = str(tmp_path / 'work')
    # The default task of every VTAB config is cifar100: no --task needed.
    log = run([sys.executable, 'tools/train.py', str(cfg), '--work-dir',
               work])
    assert 'accuracy/top1' in log
    state = torch.load(osp.join(work, 'epoch_1.pth'))['state_dict']
    tuned = {k for k in state if k.startswith('backbone.prompt.')}
    assert tuned
    # The frozen backbone, BatchNorm statistics included, is the pretrained
    # one after training.
    for key, value in parent.state_dict().items():
        assert torch.equal(state[f'backbone.{key}'], value), key
    # ... which is what the fingerprint a small checkpoint records says.
    model = MODELS.build(config_from_file(str(cfg)).model)
    model.init_weights()
    record = torch.load(osp.join(work, 'epoch_1.pth'))['meta']['vpt_mm']
    assert record['backbone_fingerprint'] == frozen_fingerprint(model)
