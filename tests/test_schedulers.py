"""The official lr schedule, through a real mmengine Runner."""
import math

import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

from vpt_mm.schedulers import warmup_cosine_factor


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.fc(torch.stack(inputs))
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return out


class RecordLr(Hook):

    def __init__(self):
        self.lrs = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        lr = runner.optim_wrapper.optimizer.param_groups[0]['lr']
        self.lrs[(runner.epoch, batch_idx)] = lr


def official_lr(base, epoch, warmup=10, total=100):
    """The official WarmupCosineSchedule, computed by hand."""
    if epoch < warmup:
        return base * epoch / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (epoch - warmup) /
                                      (total - warmup)))


def test_factor_by_hand():
    assert warmup_cosine_factor(0, 10, 100) == 0.0
    assert warmup_cosine_factor(1, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine_factor(10, 10, 100) == 1.0
    assert warmup_cosine_factor(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine_factor(100, 10, 100) == 0.0


def test_lr_seen_by_the_optimizer(tmp_path):
    """8 iterations per epoch: the lr is constant within an epoch and
    follows the official per-epoch schedule (epoch 0 at lr 0)."""
    record = RecordLr()
    data = [dict(inputs=torch.ones(2), labels=0) for _ in range(8)]
    runner = Runner(
        model=ToyModel(),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=data, sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=1, collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9)),
        param_scheduler=[dict(type='VPTWarmupCosineLR', warmup=10,
                              total=100)],
        train_cfg=dict(by_epoch=True, max_epochs=100),
        custom_hooks=[record],
        default_hooks=dict(checkpoint=None, logger=None),
        default_scope='mmpretrain')
    runner.train()
    for epoch in (0, 1, 9, 10, 50, 99):
        for it in (0, 7):
            assert record.lrs[(epoch, it)] == pytest.approx(
                official_lr(0.5, epoch), abs=1e-12), (epoch, it)
    assert record.lrs[(0, 0)] == 0.0
    assert record.lrs[(1, 0)] == pytest.approx(0.05)
    assert record.lrs[(10, 7)] == pytest.approx(0.5)


def test_schedule_must_be_per_epoch():
    from vpt_mm.schedulers import VPTWarmupCosineLR
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match='steps once per epoch'):
        VPTWarmupCosineLR(opt, warmup=10, total=100, by_epoch=False)
    with pytest.raises(ValueError, match='must be below total'):
        VPTWarmupCosineLR(opt, warmup=10, total=10)


def _groups(config, **backbone):
    """Weight decay of each trainable parameter under the config's optim
    wrapper, on a small arch."""
    import os.path as osp

    from mmengine.optim import build_optim_wrapper
    from mmpretrain.registry import MODELS

    from tests.conftest import TINY
    from vpt_mm.config import config_from_file
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    cfg = config_from_file(osp.join(repo, config))
    cfg.model.backbone.update(arch=TINY, img_size=32, patch_size=8,
                              init_cfg=None, **backbone)
    cfg.model.head.in_channels = 32
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            decay[names[id(p)]] = group['weight_decay']
    return wrapper.optimizer, decay


def test_sgd_recipe_no_decay_on_the_head_bias():
    optimizer, decay = _groups('configs/vtab/vpt_deep_vit-b.py')
    assert type(optimizer).__name__ == 'SGD'
    assert decay == {'backbone.prompt.embeddings': 1e-4,
                     'head.fc.weight': 1e-4, 'head.fc.bias': 0.0}


def test_full_recipe_adamw_without_decay_on_biases_and_norms():
    optimizer, decay = _groups('configs/vtab/full_vit-b.py')
    assert type(optimizer).__name__ == 'AdamW'
    assert optimizer.defaults['eps'] == 1e-6
    assert decay['backbone.layers.0.attn.qkv.weight'] == 0.01
    assert decay['backbone.layers.0.attn.qkv.bias'] == 0.0
    assert decay['backbone.layers.0.ln1.weight'] == 0.0
    assert decay['backbone.ln1.bias'] == 0.0
    assert decay['head.fc.weight'] == 0.01 and decay['head.fc.bias'] == 0.0
    assert decay['backbone.cls_token'] == 0.01


def test_sweep_grids_of_the_official_scripts():
    import os.path as osp

    from vpt_mm.config import config_from_file
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))

    def cfg(path):
        return config_from_file(osp.join(repo, path))

    assert cfg('configs/vtab/vpt_resnet-50.py').sweep_lrs == [
        5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05, 0.025, 0.01]
    shallow = cfg('configs/fgvc/vpt_shallow_vit-b.py').sweep_lrs
    assert {1000.0, 500.0, 250.0, 100.0, 50.0, 0.05} <= set(shallow)
    assert 'sweep_lrs' not in cfg('configs/vtab/vpt_deep_vit-b.py')
    full = cfg('configs/vtab/full_vit-b.py')
    assert full.sweep_weight_decays == [0.01]
    assert full.param_scheduler == [dict(type='VPTWarmupCosineLR', warmup=5,
                                         total=100)]
