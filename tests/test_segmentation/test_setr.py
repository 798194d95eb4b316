"""SETR-PUP with prompted and baseline ViTs, built from the real
configs/setr/ configs with a small-ViT override, in process."""
import os.path as osp

import pytest
import torch
from mmseg.structures import SegDataSample

from tests.seg_configs import (
    REPO,
    SETR,
    build_seg_model,
    write_pretrained,
    write_seg_config,
)
from vpt_mm import load_tuned, save_tuned
from vpt_mm.backbones import PromptedViT
from vpt_mm.config import config_from_file


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    return write_pretrained(str(tmp_path_factory.mktemp('ckpt') / 'vit.pth'))


def build(tmp_path, pretrained, name, extra=''):
    path = write_seg_config(str(tmp_path / f'{name}.py'), name, pretrained,
                            str(tmp_path), extra)
    return build_seg_model(path)


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def heads(names):
    return {n for n in names if n.startswith(('decode_head.',
                                              'auxiliary_head.'))}


@pytest.mark.parametrize('name', SETR)
def test_configs_train_the_right_parameters(tmp_path, pretrained, name):
    cfg, model = build(tmp_path, pretrained, name)
    names = trainable(model)
    backbone = {n for n in names if n.startswith('backbone.')}
    assert heads(names) == heads(n for n, _ in model.named_parameters())
    assert cfg.optim_wrapper.optimizer.lr == 0.005
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys == {
        'head': dict(lr_mult=1.0)}
    assert cfg.train_cfg.max_iters == 4  # the override; the real: 160k
    if name == 'vpt_deep':
        assert backbone == {'backbone.prompt.embeddings'}
        assert model.backbone.prompt.embeddings.shape == (4, 50, 32)
    elif name == 'vpt_shallow':
        assert backbone == {'backbone.prompt.embeddings'}
        assert model.backbone.prompt.embeddings.shape == (1, 50, 32)
    elif name == 'head-only':
        assert backbone == set()
    elif name == 'bias':
        assert backbone and all(n.endswith('.bias') for n in backbone)
        every_bias = {n for n, _ in model.backbone.named_parameters()
                      if n.endswith('.bias')}
        assert backbone == {f'backbone.{n}' for n in every_bias}
    else:  # full
        assert backbone == {f'backbone.{n}'
                            for n, _ in model.backbone.named_parameters()}


def test_real_recipe_values():
    cfg = config_from_file(
        osp.join(REPO, 'configs', 'setr', 'vpt_deep_vit-l_ade20k.py'))
    assert cfg.default_scope == 'mmseg'
    assert cfg.model.type == 'EncoderDecoder'
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch) == ('PromptedViT', 'l')
    assert backbone.out_indices == (9, 14, 19, 23)
    assert backbone.img_size == (512, 512)
    assert cfg.model.decode_head.type == 'SETRUPHead'
    assert len(cfg.model.auxiliary_head) == 3
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(512, 512),
                                      stride=(341, 341))
    assert cfg.optim_wrapper.optimizer.lr == 0.005


def test_pretrained_224_checkpoint_is_resized_and_loaded(tmp_path,
                                                         pretrained):
    _, model = build(tmp_path, pretrained, 'vpt_deep')
    src = torch.load(pretrained)['state_dict']
    assert model.backbone.pos_embed.shape == (1, 1 + 16, 32)
    assert src['pos_embed'].shape == (1, 1 + 196, 32)
    assert torch.equal(model.backbone.layers[2].attn.qkv.weight,
                       src['layers.2.attn.qkv.weight'])


@pytest.mark.parametrize('deep', [False, True])
@pytest.mark.parametrize('with_cls_token', [True, False])
def test_featmaps_hold_patch_tokens_only(deep, with_cls_token):
    """At a non-square crop (48x80: a 3x5 patch grid) the feature maps of
    every out index are exactly the patch tokens of the sequence."""
    kwargs = dict(arch=dict(embed_dims=32, num_layers=4, num_heads=2,
                            feedforward_channels=64),
                  img_size=64, patch_size=16, out_indices=(0, 1, 2, 3),
                  final_norm=False, with_cls_token=with_cls_token,
                  prompt_cfg=dict(num_tokens=5, deep=deep))
    if not with_cls_token:
        kwargs['out_type'] = 'featmap'
    featmap = PromptedViT(out_type='featmap', **{
        k: v for k, v in kwargs.items() if k != 'out_type'}).eval()
    raw = PromptedViT(out_type='raw', **{
        k: v for k, v in kwargs.items() if k != 'out_type'}).eval()
    raw.load_state_dict(featmap.state_dict())
    x = torch.randn(2, 3, 48, 80)
    maps, seqs = featmap(x), raw(x)
    n = 1 if with_cls_token else 0
    for i, (fm, seq) in enumerate(zip(maps, seqs)):
        assert fm.shape == (2, 32, 3, 5)
        # Deep: every layer's input holds its 5 prompts; shallow: they flow
        # on from layer 1, so the sequence always holds n + 5 + 15 tokens.
        assert seq.shape[1] == n + 5 + 15
        patches = seq[:, n + 5:].reshape(2, 3, 5, 32).permute(0, 3, 1, 2)
        torch.testing.assert_close(fm, patches, atol=1e-5, rtol=1e-5)


def test_slide_inference_with_non_square_windows(tmp_path, pretrained):
    _, model = build(tmp_path, pretrained, 'vpt_deep')
    model.eval()
    # 48x80: windows of 48x64 (a 3x4 patch grid), two of them.
    img = torch.randn(1, 3, 48, 80)
    meta = dict(img_shape=(48, 80), ori_shape=(48, 80), pad_shape=(48, 80),
                padding_size=[0, 0, 0, 0], scale_factor=(1.0, 1.0),
                flip=False)
    seen = []
    hook = model.backbone.register_forward_hook(
        lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    with torch.no_grad():
        logits = model.inference(img, [meta])
    hook.remove()
    assert logits.shape == (1, 150, 48, 80)
    assert seen == [(48, 64), (48, 64)]


def test_tuned_checkpoint_reloads_strictly(tmp_path, pretrained):
    _, model = build(tmp_path, pretrained, 'vpt_deep')
    with torch.no_grad():  # as if trained
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    path = str(tmp_path / 'tuned.safetensors')
    state = save_tuned(model, path)
    assert {k.split('.')[0] for k in state} == {
        'backbone', 'decode_head', 'auxiliary_head'}
    assert {k for k in state if k.startswith('backbone.')} == {
        'backbone.prompt.embeddings'}
    assert any(k.endswith('running_mean') for k in state)

    _, fresh = build(tmp_path, pretrained, 'vpt_deep')
    load_tuned(fresh, path)
    model.eval()
    fresh.eval()
    x = torch.randn(1, 3, 64, 64)
    samples = [SegDataSample(metainfo=dict(
        img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64),
        padding_size=[0, 0, 0, 0], scale_factor=(1.0, 1.0), flip=False))]
    with torch.no_grad():
        a = model.predict(x, samples)[0].seg_logits.data
        b = fresh.predict(x, [s.clone() for s in samples])[0].seg_logits.data
    assert torch.equal(a, b)
    # A file for another prompt length is refused.
    _, other = build(tmp_path, pretrained, 'vpt_deep',
                     "model['backbone']['prompt_cfg'] = dict(num_tokens=10)")
    with pytest.raises(ValueError):
        load_tuned(other, path)


def test_bias_pattern_matching_nothing_is_an_error(tmp_path, pretrained):
    with pytest.raises(ValueError, match='matches no parameter'):
        build(tmp_path, pretrained, 'bias',
              "model['backbone']['trainable'] = ['nonexistent']")
