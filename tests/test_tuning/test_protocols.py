"""Every protocol on a small ViT, Swin and ConvNeXt: exactly the expected
parameters train (by name), the rest stays bit-identical after a step."""
import re

import pytest
import torch
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from vpt_mm.tuning import Adapter, MlpClsHead, TunedClassifier

VIT = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64)
SWIN = dict(embed_dims=16, depths=[2, 2], num_heads=[2, 4])
BACKBONES = {
    'vit': (dict(type='VisionTransformer', arch=VIT, img_size=32,
                 patch_size=8), None, 32),
    'swin': (dict(type='SwinTransformer', arch=SWIN, img_size=32,
                  window_size=4, out_indices=(1, )),
             dict(type='GlobalAveragePooling'), 32),
    'convnext': (dict(type='ConvNeXt', arch='atto'), None, 320),
}
PROMPTED = {'vit': 'PromptedViT', 'swin': 'PromptedSwin',
            'convnext': 'PromptedConvNeXt'}


def classifier(kind, tuning, num_classes=5):
    backbone, neck, width = BACKBONES[kind]
    backbone = dict(backbone)
    if tuning['type'].startswith('VPT'):
        backbone['type'] = PROMPTED[kind]
        backbone['prompt_cfg'] = dict(num_tokens=2, deep=kind != 'convnext',
                                      dropout=0.0)
        if kind == 'convnext':
            backbone['img_size'] = 32
    return MODELS.build(dict(
        type='TunedClassifier', tuning=tuning, backbone=backbone, neck=neck,
        head=dict(type='LinearClsHead', num_classes=num_classes,
                  in_channels=width)))


def backbone_names(model):
    return [n for n, _ in model.backbone.named_parameters()]


def expected(kind, tuning, model):
    names = backbone_names(model)
    kind_type = tuning['type']
    pick = {
        'Full': lambda n: True,
        'Linear': lambda n: False,
        'Mlp': lambda n: False,
        'Sidetune': lambda n: False,
        'Bias': lambda n: n.endswith('.bias'),
        'Adapter': lambda n: '.adapter.' in n,
        'VPT': lambda n: n.startswith('prompt.'),
        'VPT+Bias': lambda n: n.startswith('prompt.') or n.endswith('.bias'),
    }
    if kind_type == 'Partial':
        k = tuning['k']
        if kind == 'vit':
            last = {f'layers.{i}.' for i in range(4 - k, 4)}
            return {n for n in names
                    if n[:9] in last or n.startswith('ln1.')}
        prefixes = {1: ('stages.1.blocks.1.', ),
                    2: ('stages.1.', ),
                    4: ('stages.1.', 'stages.0.blocks.0.',
                        'stages.0.blocks.1.')}[k]
        return {n for n in names
                if n.startswith(prefixes) or n.startswith('norm1.')}
    return {n for n in names if pick[kind_type](n)}


CASES = [
    (kind, tuning) for kind in ('vit', 'swin', 'convnext') for tuning in (
        dict(type='Full'), dict(type='Linear'), dict(type='Mlp',
                                                     num_layers=3),
        dict(type='Sidetune'), dict(type='Bias'), dict(type='VPT'),
        dict(type='VPT+Bias'))
] + [(kind, dict(type='Adapter', reduction=8)) for kind in ('vit', 'swin')
     ] + [('vit', dict(type='Partial', k=1)), ('vit', dict(type='Partial',
                                                         k=2))] + [
         ('swin', dict(type='Partial', k=k)) for k in (1, 2, 4)]


@pytest.mark.parametrize('kind,tuning', CASES,
                         ids=[f'{k}-{t}' for k, t in CASES])
def test_exactly_the_protocol_trains(kind, tuning):
    model = classifier(kind, tuning)
    want = expected(kind, tuning, model)
    got = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert got == want
    outside = [p for n, p in model.named_parameters()
               if not n.startswith('backbone.')]
    assert outside and all(p.requires_grad for p in outside)
    if tuning['type'] == 'Mlp':
        assert isinstance(model.head, MlpClsHead)
        assert sum(isinstance(m, torch.nn.Linear)
                   for m in model.head.modules()) == 3
    if tuning['type'] == 'Sidetune':
        assert torch.sigmoid(model.side.gate) == 0.5

    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.5)
    x = torch.randn(4, 3, 32, 32)
    samples = [DataSample().set_gt_label(i % 5) for i in range(4)]
    loss = sum(model(x, samples, mode='loss').values())
    loss.backward()
    opt.step()
    after = model.state_dict()
    param_names = {n for n, _ in model.named_parameters()}
    for key, value in before.items():
        if key.startswith('backbone.') and key[9:] not in got and \
                key in param_names:
            assert torch.equal(value, after[key]), key
        if key.startswith('backbone.') and key not in param_names and \
                tuning['type'] != 'Full':
            assert torch.equal(value, after[key]), key  # buffers, BN stats


def test_adapter_learns_from_the_first_step():
    model = classifier('vit', dict(type='Adapter', reduction=8))
    adapter = model.backbone.layers[0].adapter
    assert isinstance(adapter, Adapter)
    assert adapter.down.weight.abs().sum() > 0
    assert adapter.up.weight.abs().sum() == 0
    x = torch.randn(2, 3, 32, 32)
    # It starts as the identity: the model's features equal the plain ViT's.
    plain = classifier('vit', dict(type='Linear'))
    plain.load_state_dict(model.state_dict(), strict=False)
    model.eval()
    plain.eval()
    torch.testing.assert_close(model.extract_feat(x)[0],
                               plain.extract_feat(x)[0])
    model.train()
    down = adapter.down.weight.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                          lr=0.5)
    for _ in range(2):
        samples = [DataSample().set_gt_label(i % 5) for i in range(2)]
        sum(model(x, samples, mode='loss').values()).backward()
        opt.step()
        opt.zero_grad()
    assert not torch.equal(adapter.down.weight, down)


def test_frozen_parts_stay_in_eval_mode():
    model = classifier('swin', dict(type='Partial', k=1))
    model.train()
    assert model.backbone.stages[1].blocks[1].training
    assert not model.backbone.stages[0].training
    assert not model.backbone.patch_embed.training
    resnet = MODELS.build(dict(
        type='TunedClassifier', tuning=dict(type='Bias'),
        backbone=dict(type='ResNet', depth=18),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=512)))
    resnet.train()
    assert not resnet.backbone.bn1.training  # stats stay frozen
    assert resnet.backbone.bn1.bias.requires_grad
    stats = resnet.backbone.bn1.running_mean.clone()
    resnet(torch.randn(2, 3, 32, 32), [DataSample().set_gt_label(0)] * 2,
           mode='loss')
    assert torch.equal(stats, resnet.backbone.bn1.running_mean)


@pytest.mark.parametrize('kind,tuning,match', [
    ('convnext', dict(type='Adapter'), 'has none'),
    ('convnext', dict(type='Partial', k=1), 'not defined for ConvNeXt'),
    ('swin', dict(type='Partial', k=3), 'not defined for Swin'),
    ('vit', dict(type='Partial', k=5), 'has 4 layers'),
    ('vit', dict(type='Adapter', reduction=0), 'integer >= 1'),
    ('vit', dict(type='Adapter', r=8), "not \\['r'\\]"),
    ('vit', dict(type='Prefix'), 'Unknown tuning type'),
    ('vit', dict(type='Bias', cache_features=True), 'cache_features'),
])
def test_protocols_that_do_not_fit_are_errors(kind, tuning, match):
    with pytest.raises(ValueError, match=match):
        classifier(kind, tuning)


def test_prompts_and_baselines_do_not_mix():
    with pytest.raises(ValueError, match='needs a prompted backbone'):
        MODELS.build(dict(
            type='TunedClassifier', tuning=dict(type='VPT'),
            backbone=BACKBONES['vit'][0],
            head=dict(type='LinearClsHead', num_classes=2, in_channels=32)))
    backbone = dict(BACKBONES['vit'][0], type='PromptedViT')
    with pytest.raises(ValueError, match='baseline without prompts'):
        MODELS.build(dict(
            type='TunedClassifier', tuning=dict(type='Linear'),
            backbone=backbone,
            head=dict(type='LinearClsHead', num_classes=2, in_channels=32)))


def test_cached_features_train_like_uncached():
    torch.manual_seed(0)
    cached = classifier('vit', dict(type='Linear', cache_features=True))
    plain = classifier('vit', dict(type='Linear'))
    plain.load_state_dict(cached.state_dict())
    images = torch.randn(8, 3, 32, 32)
    labels = [i % 5 for i in range(8)]
    opts = [torch.optim.SGD(m.head.parameters(), lr=0.5, momentum=0.9)
            for m in (cached, plain)]
    for epoch in range(3):
        order = torch.randperm(8)
        for start in (0, 4):
            idx = order[start:start + 4]
            for model, opt in zip((cached, plain), opts):
                model.train()
                samples = [DataSample(metainfo=dict(sample_idx=int(i)))
                           .set_gt_label(labels[i]) for i in idx]
                loss = sum(model(images[idx], samples,
                                 mode='loss').values())
                opt.zero_grad()
                loss.backward()
                opt.step()
    assert len(cached._feature_cache) == 8
    torch.testing.assert_close(cached.head.fc.weight, plain.head.fc.weight,
                               atol=1e-5, rtol=1e-5)
    cached.eval()
    plain.eval()
    x = torch.randn(3, 3, 32, 32)
    a = [s.pred_score for s in cached(x, mode='predict')]
    b = [s.pred_score for s in plain(x, mode='predict')]
    torch.testing.assert_close(torch.stack(a), torch.stack(b), atol=1e-5,
                               rtol=1e-5)


def test_bias_pattern_is_bitfit():
    model = classifier('vit', dict(type='Bias'))
    names = {n for n, p in model.backbone.named_parameters()
             if p.requires_grad}
    assert names and all(re.search(r'(^|\.)bias$', n) for n in names)
    assert isinstance(model, TunedClassifier)


def test_protocol_and_backbone_option_types():
    from vpt_mm.tuning.protocols import Protocol
    with pytest.raises(TypeError, match='tuning.cache_features must be True '
                       "or False, got 'yes'"):
        Protocol.from_dict(dict(type='Linear', cache_features='yes'))
    with pytest.raises(TypeError, match="tuning.k must be an integer >= 1, "
                       "got '2'"):
        Protocol.from_dict(dict(type='Partial', k='2'))
    from tests.conftest import tiny_vit
    with pytest.raises(TypeError, match="freeze_backbone must be True or "
                       "False, got 'False'"):
        tiny_vit(dict(num_tokens=1), freeze_backbone='False')
    with pytest.raises(TypeError, match="fuse_prompts must be True or False"):
        tiny_vit(dict(num_tokens=1), fuse_prompts=0)
    with pytest.raises(TypeError, match='trainable must be a list of '
                       "strings, got 'bias'"):
        tiny_vit(dict(num_tokens=1), trainable='bias')


def _linear_classifier(checkpoint):
    from tests.conftest import TINY
    return MODELS.build(dict(
        type='TunedClassifier',
        tuning=dict(type='Linear'),
        backbone=dict(type='VisionTransformer', arch=TINY, img_size=32,
                      patch_size=8, init_cfg=dict(type='Pretrained',
                                                  checkpoint=checkpoint)),
        neck=None,
        head=dict(type='LinearClsHead', num_classes=3, in_channels=32)))


def test_plain_backbone_pretrained_loads_strictly(tmp_path, pretrained):
    model = _linear_classifier(pretrained)
    model.init_weights()
    saved = torch.load(pretrained)['state_dict']
    assert torch.equal(model.backbone.layers[1].ffn.layers[1].weight,
                       saved['layers.1.ffn.layers.1.weight'])
    del saved['layers.1.ln1.weight']
    bad = str(tmp_path / 'bad.pth')
    torch.save(saved, bad)
    with pytest.raises(ValueError, match="'layers.1.ln1.weight' is missing"):
        _linear_classifier(bad).init_weights()


def test_mmengine_loader_rebuilds_a_plain_backbone(tmp_path, pretrained):
    """mmengine's generic load_checkpoint (what mmpretrain's inferencer
    calls) of a tuned-only file loads the pretrained backbone first."""
    from mmengine.runner import load_checkpoint

    from vpt_mm.checkpoints import save_tuned
    model = _linear_classifier(pretrained)
    model.init_weights()
    with torch.no_grad():
        model.head.fc.weight.add_(1)
    path = str(tmp_path / 'linear.safetensors')
    save_tuned(model, path)
    fresh = _linear_classifier(pretrained)  # never initialised
    load_checkpoint(fresh, path)
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    fresh.eval()
    assert torch.equal(fresh(x, mode='tensor'), model(x, mode='tensor'))
    other = tmp_path / 'other.pth'
    state = torch.load(pretrained)['state_dict']
    state['ln1.weight'] = state['ln1.weight'] + 1
    torch.save(state, other)
    with pytest.raises(ValueError, match='fingerprint'):
        load_checkpoint(_linear_classifier(str(other)), path)


def test_adapter_is_the_official_pfeiffer_placement():
    """A ViT block with an adapter computes, by hand from the official
    definition: h = x + attn(ln1(x)); f = mlp(ln2(h));
    out = h + f + up(gelu(down(f)))."""
    model = classifier('vit', dict(type='Adapter', reduction=8))
    block = model.backbone.layers[0]
    with torch.no_grad():
        block.adapter.up.weight.normal_()  # away from the identity init
        block.adapter.up.bias.normal_()
    block.eval()
    x = torch.randn(2, 5, block.embed_dims)
    with torch.no_grad():
        h = x + block.attn(block.ln1(x))
        f = block.ffn.layers(block.ln2(h))  # the hook is on these layers
        # recompute f without the hook's adapter: the MLP's own modules
        mlp = block.ffn.layers
        g = block.ln2(h)
        for layer in mlp:
            g = layer(g)
        a = block.adapter
        expected = h + g + a.up(torch.nn.functional.gelu(a.down(g)))
        assert torch.allclose(block(x), expected, atol=1e-6)
        assert torch.allclose(f, g + a.up(torch.nn.functional.gelu(
            a.down(g))), atol=1e-6)


@pytest.mark.parametrize('how', ['data', 'load_state_dict'])
def test_cached_features_follow_the_backbone(how):
    """Cached features are dropped when the frozen backbone changes, however
    it changed (checked when training resumes, at each epoch's train())."""
    torch.manual_seed(0)
    model = classifier('vit', dict(type='Linear', cache_features=True))
    images = torch.randn(4, 3, 32, 32)
    samples = [DataSample(metainfo=dict(sample_idx=i)).set_gt_label(i % 5)
               for i in range(4)]
    model.train()
    first = model(images, samples, mode='loss')['loss']
    weight = model.backbone.patch_embed.projection.weight
    new = torch.randn_like(weight)
    if how == 'data':
        weight.data.copy_(new)
    else:
        state = model.state_dict()
        state['backbone.patch_embed.projection.weight'] = new
        model.load_state_dict(state)
    model.train()  # the next epoch
    after = model(images, samples, mode='loss')['loss']
    expected = classifier('vit', dict(type='Linear'))
    expected.load_state_dict(model.state_dict())
    expected.train()
    torch.testing.assert_close(after,
                               expected(images, samples, mode='loss')['loss'])
    assert not torch.allclose(after, first)
