"""One rule for which modules train (vpt_mm.freeze), for every protocol."""
import torch.nn as nn
from mmpretrain.registry import MODELS

import vpt_mm  # noqa: F401
from vpt_mm.freeze import set_frozen_modes

ARCH = dict(embed_dims=32, num_layers=2, num_heads=4,
            feedforward_channels=64)


def classifier(tuning, backbone_type, **kw):
    return MODELS.build(dict(
        type='TunedClassifier', tuning=dict(type=tuning),
        backbone=dict(type=backbone_type, arch=ARCH, img_size=32,
                      patch_size=8, drop_rate=0.1, drop_path_rate=0.1, **kw),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=32)))


def modes(model):
    return {n: m.training for n, m in model.backbone.named_modules()
            if n and not n.startswith('prompt')}


def test_bias_and_vpt_bias_agree_on_modes():
    """Bias on a plain ViT and VPT + Bias on a prompted one: the same
    modules train (the blocks whose biases learn, their dropout and
    drop-path included)."""
    bias = classifier('Bias', 'VisionTransformer').train()
    vpt_bias = classifier('VPT+Bias', 'PromptedViT',
                          prompt_cfg=dict(num_tokens=2, deep=True)).train()
    assert modes(bias) == modes(vpt_bias)
    assert modes(bias)['layers.0.attn.out_drop']  # drop-path, as learning
    vpt = classifier('VPT', 'PromptedViT',
                     prompt_cfg=dict(num_tokens=2, deep=True)).train()
    assert not any(modes(vpt).values())  # a fixed function
    assert vpt.backbone.prompt.dropout.training


def test_parameterless_modules_follow_their_parent():
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Dropout()),
                          nn.Dropout(), nn.BatchNorm1d(2))
    model[0][0].requires_grad_(False)
    model[2].weight.requires_grad_(False)
    set_frozen_modes(model.train())
    assert not model[0].training and not model[0][1].training
    assert model[1].training  # the root still learns (the BN's bias)
    assert not model[2].training  # frozen weight: statistics stay frozen
    assert model.training
    model.eval()
    set_frozen_modes(model)
    assert not any(m.training for m in model.modules())
