import pytest
import torch
from mmpretrain.models.backbones import VisionTransformer

from tests.conftest import TINY, tiny_vit
from vpt_mm.backbones import PromptedViT

VARIANTS = [
    dict(num_tokens=5),
    dict(num_tokens=5, deep=True),
    dict(num_tokens=3, layers=(2, 3)),
    dict(num_tokens=3, layers=(4, 2)),
    dict(num_tokens=16, location='add'),
    dict(num_tokens=16, location='add', deep=True),
    dict(num_tokens=4, location='prepend-pixel'),
    dict(num_tokens=1, location='concat-channel'),
    dict(num_tokens=5, deep=True, share='intra'),
    dict(num_tokens=5, deep=True, share='inter'),
    dict(num_tokens=5, deep=True, share='all'),
    dict(num_tokens=5, deep=True, proj_dim=8),
    dict(num_tokens=5, deep=True, frozen=True),
]


@pytest.mark.parametrize('prompt_cfg', VARIANTS)
@pytest.mark.parametrize('size', [32, 48, 64])
def test_output_shapes(prompt_cfg, size):
    model = tiny_vit(prompt_cfg, out_type='featmap', out_indices=(1, 3))
    feats = model(torch.rand(2, 3, size, size))
    assert [f.shape for f in feats] == [(2, 32, size // 8, size // 8)] * 2
    model = tiny_vit(prompt_cfg)
    assert model(torch.rand(2, 3, size, size))[0].shape == (2, 32)


@pytest.mark.parametrize('out_type', ['avg_featmap', 'avg_prompt', 'avg_all'])
@pytest.mark.parametrize('with_cls_token', [True, False])
def test_pools(out_type, with_cls_token):
    model = tiny_vit(
        dict(num_tokens=5, deep=True, dropout=0.0),
        out_type=out_type,
        with_cls_token=with_cls_token)
    model.eval()
    x = torch.rand(3, 3, 40, 40)
    raw_model = tiny_vit(
        dict(num_tokens=5, deep=True, dropout=0.0),
        out_type='raw',
        with_cls_token=with_cls_token)
    raw_model.load_state_dict(model.state_dict())
    raw_model.eval()
    raw = raw_model(x)[0]
    n = int(with_cls_token)
    assert raw.shape == (3, n + 5 + 25, 32)
    expected = dict(
        avg_featmap=raw[:, n + 5:].mean(1),
        avg_prompt=raw[:, n:n + 5].mean(1),
        avg_all=raw[:, n:].mean(1))[out_type]
    torch.testing.assert_close(model(x)[0], expected)


def test_featmap_has_no_prompt_tokens():
    cfg = dict(num_tokens=7, deep=True, dropout=0.0)
    feat_model = tiny_vit(cfg, out_type='featmap', out_indices=(0, 3))
    raw_model = tiny_vit(cfg, out_type='raw', out_indices=(0, 3))
    raw_model.load_state_dict(feat_model.state_dict())
    x = torch.rand(2, 3, 32, 32)
    for feat, raw in zip(feat_model(x), raw_model(x)):
        patches = raw[:, 1 + 7:].reshape(2, 4, 4, 32).permute(0, 3, 1, 2)
        torch.testing.assert_close(feat, patches)


def test_requires_grad_by_name():
    model = tiny_vit(dict(num_tokens=5, deep=True, proj_dim=8))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        'prompt.embeddings', 'prompt.proj.weight', 'prompt.proj.bias'
    }
    channel = tiny_vit(dict(num_tokens=1, location='concat-channel'))
    assert {n for n, p in channel.named_parameters() if p.requires_grad} == {
        'prompt.channels', 'prompt.channel_proj.weight'
    }
    full = tiny_vit(dict(num_tokens=5), freeze_backbone=False)
    assert all(p.requires_grad for p in full.parameters())


def test_train_keeps_backbone_in_eval_mode():
    model = tiny_vit(dict(num_tokens=5, deep=True), drop_rate=0.1)
    model.train()
    assert model.prompt.training and model.prompt.dropout.training
    for name, module in model.named_modules():
        if not name.startswith('prompt') and name:
            assert not module.training, name
    model.eval()
    assert not model.prompt.training
    full = tiny_vit(dict(num_tokens=5), freeze_backbone=False)
    full.train()
    assert full.layers[0].training


def test_one_step_changes_only_prompts_and_head():
    from mmpretrain.registry import MODELS
    clf = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='PromptedViT',
                arch=TINY,
                img_size=32,
                patch_size=8,
                drop_rate=0.1,
                prompt_cfg=dict(num_tokens=5, deep=True)),
            head=dict(
                type='LinearClsHead',
                num_classes=3,
                in_channels=32,
                loss=dict(type='CrossEntropyLoss'))))
    clf.train()
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    optim = torch.optim.SGD(
        [p for p in clf.parameters() if p.requires_grad], lr=1.0,
        momentum=0.9)
    from mmpretrain.structures import DataSample
    samples = [DataSample().set_gt_label(i % 3) for i in range(4)]
    losses = clf(torch.rand(4, 3, 32, 32), samples, mode='loss')
    sum(losses.values()).backward()
    optim.step()
    after = clf.state_dict()
    for name, param in clf.named_parameters():
        if name.startswith('backbone.prompt.') or name.startswith('head.'):
            assert not torch.equal(before[name], after[name]), name
        else:
            assert param.grad is None, name
            assert torch.equal(before[name], after[name]), name


@pytest.mark.parametrize('cfg', [
    dict(num_tokens=6),
    dict(num_tokens=6, deep=True),
    dict(num_tokens=6, layers=(2, 3)),
    dict(num_tokens=4, location='prepend-pixel'),
])
def test_prompt_position_invariance(cfg):
    model = tiny_vit(dict(cfg, dropout=0.0))
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    out = model(x)[0]
    perm = torch.randperm(model.prompt.num_tokens)
    with torch.no_grad():
        if hasattr(model.prompt, 'pixels'):
            model.prompt.pixels.copy_(model.prompt.pixels[perm])
        else:
            model.prompt.embeddings.copy_(model.prompt.embeddings[:, perm])
    torch.testing.assert_close(model(x)[0], out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('cfg', [
    dict(num_tokens=5, deep=True),
    dict(num_tokens=16, location='add'),
    dict(num_tokens=1, location='concat-channel'),
])
def test_samples_are_independent(cfg):
    model = tiny_vit(cfg)
    model.eval()
    x = torch.rand(4, 3, 32, 32)
    batch = model(x)[0]
    single = torch.cat([model(x[i:i + 1])[0] for i in range(4)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-5)
    other = x.clone()
    other[1:] = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(model(other)[0][0], batch[0], atol=1e-5,
                               rtol=1e-5)


def test_zero_add_prompts_equal_plain_vit():
    model = tiny_vit(dict(num_tokens=16, location='add', dropout=0.0))
    with torch.no_grad():
        model.prompt.embeddings.zero_()
    plain = VisionTransformer(arch=TINY, img_size=32, patch_size=8)
    missing, unexpected = plain.load_state_dict(
        model.state_dict(), strict=False)
    assert missing == [] and unexpected == ['prompt.embeddings']
    model.eval()
    plain.eval()
    x = torch.rand(2, 3, 48, 48)
    torch.testing.assert_close(model(x)[0], plain(x)[0])


@pytest.mark.parametrize('deep, count', [(False, 38_400), (True, 460_800)])
def test_vit_b16_prompt_parameter_counts(deep, count):
    from vpt_mm.backbones import PromptedViT
    from vpt_mm.tuning import count_parameters, format_param_count
    model = PromptedViT(
        arch='b', patch_size=16,
        prompt_cfg=dict(num_tokens=50, deep=deep))
    counts = count_parameters(model)
    assert counts.tuned == {'prompt': count}
    assert counts.backbone == 85_798_656
    table = format_param_count(counts)
    assert f'{count:,}' in table
    assert ('0.53%' if deep else '0.04%') in table


def test_builds_in_mmseg_encoder_decoder():
    from mmengine.registry import DefaultScope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor'),
        backbone=dict(
            type='mmseg.PromptedViT',
            arch=TINY,
            img_size=32,
            patch_size=8,
            out_type='featmap',
            out_indices=(1, 3),
            prompt_cfg=dict(num_tokens=5, deep=True)),
        decode_head=dict(
            type='FCNHead',
            in_channels=32,
            in_index=1,
            channels=16,
            num_convs=1,
            num_classes=4,
            norm_cfg=dict(type='BN'),
            loss_decode=dict(type='CrossEntropyLoss')))
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg)
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, 32, 32)))
    sample.set_metainfo(dict(img_shape=(32, 32), ori_shape=(32, 32)))
    losses = model(torch.rand(2, 3, 32, 32), [sample, sample], mode='loss')
    assert 'decode.loss_ce' in losses
    assert not model.backbone.layers[0].attn.qkv.weight.requires_grad


@pytest.mark.parametrize('kwargs, match', [
    (dict(out_type='tokens'), 'Unsupported `out_type` tokens'),
    (dict(out_type='avg_prompt',
          prompt_cfg=dict(num_tokens=16, location='add')),
     "pools prompt tokens, but prompt location 'add' adds none"),
    (dict(out_type='avg_prompt', out_indices=(0, 3),
          prompt_cfg=dict(num_tokens=2, layers=(2, 4))),
     'include layers before the prompts enter'),
    (dict(prompt_cfg=dict(num_tokens=2, layers=(1, 5))),
     'outside the model: layers are numbered 1..4'),
])
def test_bad_arguments(kwargs, match):
    kwargs.setdefault('prompt_cfg', dict(num_tokens=2))
    with pytest.raises(ValueError, match=match):
        tiny_vit(**kwargs)


@pytest.mark.parametrize('fuse', [True, False])
def test_with_cp_gives_the_same_outputs_and_gradients(fuse):
    """Activation checkpointing reruns the frozen layers in backward; the
    outputs, prompt and head gradients are those without it."""
    results = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = tiny_vit(dict(num_tokens=3, deep=True, dropout=0.2),
                         fuse_prompts=fuse, with_cp=with_cp)
        model.train()
        torch.manual_seed(5)
        out = model(torch.ones(2, 3, 32, 32))[0]
        out.square().sum().backward()
        results.append((out.detach(), model.prompt.embeddings.grad))
    assert results[0][1].abs().sum() > 0
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])


def test_unprompted_cfg_names_every_own_argument():
    """Each prompted backbone declares the arguments it adds to its
    mmpretrain parent (OWN_ARGS), so its unprompted config builds that
    parent with every other argument kept."""
    import inspect

    from mmpretrain.registry import MODELS

    from vpt_mm.backbones import (
        FrozenViT,
        PromptedConvNeXt,
        PromptedResNet,
        PromptedSwin,
        PromptedTimmViT,
        PromptedViT,
    )
    for cls in (FrozenViT, PromptedConvNeXt, PromptedResNet, PromptedSwin,
                PromptedTimmViT, PromptedViT):
        # The arguments of every constructor above the upstream class (a
        # mixin's included).
        mro = cls.__mro__[:cls.__mro__.index(cls.UPSTREAM)]
        own = set().union(*(inspect.signature(c.__init__).parameters
                            for c in mro if '__init__' in vars(c)))
        own -= set(inspect.signature(cls.UPSTREAM.__init__).parameters)
        own -= {'args', 'kwargs'}
        # FrozenViT is always frozen: it takes no freeze_backbone.
        assert own <= set(cls.OWN_ARGS), cls.__name__
        assert set(cls.OWN_ARGS) - own <= {'freeze_backbone',
                                           'prompt_cfg'}, cls.__name__
    cfg = dict(type='PromptedViT', arch='deit-tiny', img_size=32,
               patch_size=8, with_cp=True, fuse_prompts=False,
               trainable=[r'(^|\.)bias$'], out_type='avg_featmap',
               prompt_cfg=dict(num_tokens=5, deep=True))
    plain = MODELS.build(PromptedViT.unprompted_cfg(cfg))
    assert type(plain).__name__ == 'VisionTransformer'
    assert plain.out_type == 'avg_featmap'
    assert plain.patch_resolution == (4, 4)
    with pytest.raises(ValueError, match="out_type 'avg_all' pools prompt"):
        PromptedViT.unprompted_cfg(dict(cfg, out_type='avg_all'))


SMALL = dict(embed_dims=64, num_layers=2, num_heads=2,
             feedforward_channels=128)


@pytest.mark.parametrize('kwargs', [
    dict(arch='dinov2-small'),  # mmpretrain's DINOv2 arch (layer scale)
    dict(arch=SMALL, pre_norm=True),  # CLIP's pre-norm
    dict(arch=SMALL, layer_cfgs=dict(ffn_type='swiglu_fused'),
         layer_scale_init_value=0.1),  # SwiGLU + layer scale
], ids=['dinov2', 'clip-pre-norm', 'swiglu-layer-scale'])
def test_mmpretrain_archs_fused_equals_token(kwargs):
    """mmpretrain's own DINOv2, CLIP (pre_norm) and SwiGLU + layer-scale
    ViTs under PromptedViT: the fused form equals the token form."""
    outs = []
    for fuse in (False, True):
        torch.manual_seed(0)
        model = PromptedViT(img_size=28, patch_size=14, fuse_prompts=fuse,
                            prompt_cfg=dict(num_tokens=3, deep=True,
                                            dropout=0.0), **kwargs).eval()
        with torch.no_grad():
            model.prompt.embeddings.normal_()
        y = model(torch.rand(2, 3, 28, 28, generator=torch.Generator(
        ).manual_seed(1)))[0]
        y.square().sum().backward()
        outs.append((y, model.prompt.embeddings.grad))
    assert model.fused_layers
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[1][1], outs[0][1], atol=1e-5, rtol=1e-4)


def test_mmpretrain_eva_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match=r"takes no \['use_abs_pos_emb'\].*"
                       'PromptedTimmViT'):
        PromptedViT(arch=SMALL, img_size=28, patch_size=14,
                    use_abs_pos_emb=False)
