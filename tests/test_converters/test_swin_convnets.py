"""Swin, ConvNeXt and ResNet converters, checked against randomly built
source models written in their original release layouts."""
import re

import pytest
import timm
import torch
import torchvision
from mmpretrain.models.backbones import ConvNeXt, ResNet, SwinTransformer

from vpt_mm.backbones import PromptedConvNeXt, PromptedResNet, PromptedSwin
from vpt_mm.converters import (
    convert_convnext,
    convert_file,
    convert_swin,
    convert_torchvision_resnet,
)
from vpt_mm.converters.swin import official_relative_position_index

SWIN_ARCH = dict(embed_dims=16, depths=[2, 2, 2], num_heads=[2, 2, 4])


def timm_swin_as_official(model, ws):
    """timm keeps the official names except that the patch merging opens the
    next stage; move it back to the end of its stage and add the buffers the
    official checkpoints carry."""
    state = {}
    for key, value in model.state_dict().items():
        m = re.match(r'^layers\.(\d+)\.downsample\.(.*)$', key)
        if m:
            key = f'layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}'
        key = key.replace('head.fc.', 'head.')
        state[key] = value
        if key.endswith('attn.relative_position_bias_table'):
            prefix = key[:-len('relative_position_bias_table')]
            state[prefix + 'relative_position_index'] = \
                official_relative_position_index(ws)
            block = prefix[:-len('attn.')]
            state[block + 'attn_mask'] = torch.zeros(4, ws * ws, ws * ws)
    return {'model': state}


def timm_convnext_as_official(model):
    rules = (
        (r'^stem\.', 'downsample_layers.0.'),
        (r'^stages\.(\d+)\.downsample\.', r'downsample_layers.\1.'),
        (r'^stages\.(\d+)\.blocks\.(\d+)\.conv_dw\.', r'stages.\1.\2.dwconv.'),
        (r'^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc(\d)\.',
         r'stages.\1.\2.pwconv\3.'),
        (r'^stages\.(\d+)\.blocks\.(\d+)\.', r'stages.\1.\2.'),
        (r'^head\.norm\.', 'norm.'),
        (r'^head\.fc\.', 'head.'),
    )
    state = {}
    for key, value in model.state_dict().items():
        for pattern, repl in rules:
            if re.match(pattern, key):
                key = re.sub(pattern, repl, key)
                break
        state[key] = value
    return {'model': state}


def randomise_norm_stats(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)


def convert_to_file(tmp_path, checkpoint, convert):
    """Save ``checkpoint`` and convert it through the scripts' CLI."""
    src = str(tmp_path / 'original.pth')
    torch.save(checkpoint, src)
    dst = str(tmp_path / 'converted.pth')
    convert_file(convert, 'test', [src, dst])
    return dst


def assert_prompted_loads(prompted, plain, dst):
    prompted.init_cfg = dict(type='Pretrained', checkpoint=dst)
    prompted.init_weights()
    state = prompted.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(state[key], value), key


def test_swin_matches_source_features(tmp_path):
    src = timm.models.swin_transformer.SwinTransformer(
        img_size=112, patch_size=4, window_size=7, embed_dim=16,
        depths=(2, 2, 2), num_heads=(2, 2, 4), num_classes=5).eval()
    dst = convert_to_file(tmp_path, timm_swin_as_official(src, 7),
                          convert_swin)

    plain = SwinTransformer(arch=SWIN_ARCH, img_size=112, window_size=7,
                            out_indices=(2, ))
    plain.load_state_dict(torch.load(dst)['state_dict'])
    plain.eval()
    x = torch.rand(2, 3, 112, 112)
    expected = src.forward_features(x).permute(0, 3, 1, 2)
    torch.testing.assert_close(plain(x)[0], expected, atol=1e-5, rtol=1e-5)

    prompted = PromptedSwin(arch=SWIN_ARCH, img_size=112, window_size=7,
                            out_indices=(2, ),
                            prompt_cfg=dict(num_tokens=5, deep=True))
    assert_prompted_loads(prompted, plain, dst)


def test_swin_converts_timm_layout(tmp_path):
    """timm's own Swin state dict (patch merging opening the next stage, no
    relative-position index, ``head.fc``), as a .safetensors file as timm
    publishes it: converted to the same file as the official layout, its
    features equal to timm's."""
    from safetensors.torch import save_file
    src = timm.models.swin_transformer.SwinTransformer(
        img_size=112, patch_size=4, window_size=7, embed_dim=16,
        depths=(2, 2, 2), num_heads=(2, 2, 4), num_classes=5).eval()
    assert not [k for k in src.state_dict() if k.endswith('_index')]
    path = str(tmp_path / 'model.safetensors')
    save_file(dict(src.state_dict()), path)
    dst = str(tmp_path / 'converted.pth')
    convert_file(convert_swin, 'test', [path, dst])
    official = convert_to_file(tmp_path, timm_swin_as_official(src, 7),
                               convert_swin)
    a, b = torch.load(dst)['state_dict'], torch.load(official)['state_dict']
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    plain = SwinTransformer(arch=SWIN_ARCH, img_size=112, window_size=7,
                            out_indices=(2, ))
    plain.load_state_dict(a)
    plain.eval()
    x = torch.rand(2, 3, 112, 112)
    expected = src.forward_features(x).permute(0, 3, 1, 2)
    torch.testing.assert_close(plain(x)[0], expected, atol=1e-5, rtol=1e-5)
    # Patch mergings where neither layout has them: refused, naming both.
    state = dict(src.state_dict())
    for key in [k for k in state if k.startswith('layers.1.downsample.')]:
        state[key.replace('layers.1.', 'layers.0.')] = state[key]
    with pytest.raises(ValueError, match=r'patch mergings in stages '
                       r'\[0, 1, 2\] of 3: neither the official'):
        convert_swin(state)


def test_convnext_matches_source_features(tmp_path):
    # The official layout: linear point-wise layers, channels-last norms.
    src = timm.models.convnext.ConvNeXt(
        depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), conv_mlp=False,
        num_classes=5).eval()
    with torch.no_grad():  # layer scale starts at 1e-6: make blocks count
        for name, param in src.named_parameters():
            if name.endswith('gamma'):
                param.uniform_(0.5, 1.0)
    dst = convert_to_file(tmp_path, timm_convnext_as_official(src),
                       convert_convnext)

    plain = ConvNeXt(arch='atto')
    plain.load_state_dict(torch.load(dst)['state_dict'])
    plain.eval()
    x = torch.rand(2, 3, 64, 64)
    expected = src.forward_head(src.forward_features(x), pre_logits=True)
    torch.testing.assert_close(plain(x)[0], expected, atol=1e-5, rtol=1e-5)

    prompted = PromptedConvNeXt(arch='atto', img_size=64,
                                prompt_cfg=dict(num_tokens=3))
    assert_prompted_loads(prompted, plain, dst)


def test_resnet_matches_source_features(tmp_path):
    src = torchvision.models.resnet50()
    randomise_norm_stats(src)
    src.eval()
    dst = convert_to_file(tmp_path, src.state_dict(),
                       convert_torchvision_resnet)

    plain = ResNet(depth=50)
    plain.load_state_dict(torch.load(dst)['state_dict'])
    plain.eval()
    x = torch.rand(2, 3, 64, 64)
    trunk = torch.nn.Sequential(*list(src.children())[:-1])
    expected = trunk(x).flatten(1)
    torch.testing.assert_close(plain(x)[0].mean(dim=(2, 3)), expected,
                               atol=1e-5, rtol=1e-5)

    prompted = PromptedResNet(depth=50, img_size=64,
                              prompt_cfg=dict(num_tokens=3))
    assert_prompted_loads(prompted, plain, dst)


def test_swin_patch_merging_order_is_permuted():
    """The official merge order (kw, kh, C) becomes mmcv's (C, kh, kw)."""
    c = 2
    weight = torch.arange(4 * c, dtype=torch.float32).unsqueeze(0)
    state = {
        'patch_embed.proj.weight': torch.zeros(1),
        'layers.0.downsample.reduction.weight': weight,
        'layers.1.blocks.0.norm1.weight': torch.zeros(1),
    }
    out = convert_swin(state)['stages.0.downsample.reduction.weight'][0]
    # Official channel index (kh + 2 * kw) * C + c; mmcv c * 4 + kh * 2 + kw.
    for ch in range(c):
        for kh in range(2):
            for kw in range(2):
                assert out[ch * 4 + kh * 2 + kw] == (kh + 2 * kw) * c + ch


@pytest.mark.parametrize('convert,state,match', [
    (convert_swin, {'blocks.0.norm1.weight': torch.zeros(1)},
     'Not an official Swin'),
    (convert_swin, {'patch_embed.proj.weight': torch.zeros(1),
                    'layers.0.blocks.0.mystery': torch.zeros(1)},
     "Swin key 'layers.0.blocks.0.mystery'"),
    (convert_convnext, {'stem.0.weight': torch.zeros(1)},
     'Not an official ConvNeXt'),
    (convert_torchvision_resnet, {'conv1.weight': torch.zeros(1),
                                  'layer1.0.se.fc.weight': torch.zeros(1)},
     "ResNet key 'layer1.0.se.fc.weight'"),
    (convert_torchvision_resnet, {'stem.conv.weight': torch.zeros(1)},
     'Not a torchvision ResNet'),
])
def test_foreign_layouts_are_rejected(convert, state, match):
    with pytest.raises(ValueError, match=match):
        convert(state)


def test_wrong_arch_is_rejected_naming_the_key(tmp_path):
    src = torchvision.models.resnet18()
    dst = convert_to_file(tmp_path, src.state_dict(),
                       convert_torchvision_resnet)
    model = PromptedResNet(depth=50, img_size=64,
                           init_cfg=dict(type='Pretrained', checkpoint=dst))
    with pytest.raises(ValueError, match='does not fit PromptedResNet'):
        model.init_weights()
