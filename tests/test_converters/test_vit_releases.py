"""Google .npz, MAE and MoCo v3 ViT checkpoints, written in their original
layouts from randomly built timm ViTs, converted and compared."""
import numpy as np
import pytest
import torch
from mmpretrain.models.backbones import VisionTransformer
from timm.models.vision_transformer import _load_weights

from tests.conftest import TINY
from tests.test_converters.test_timm_vit import make_timm
from vpt_mm.converters import (
    convert_file,
    convert_google_vit,
    convert_mae_vit,
    convert_mocov3_vit,
)

HEADS = 2


def google_arrays(model):
    """A timm ViT in the vision_transformer .npz layout, with an
    ImageNet-21k style pre_logits layer and head."""
    s = {k: v.detach() for k, v in model.state_dict().items()}
    d = s['cls_token'].shape[-1]
    hd = d // HEADS
    out = {
        'embedding/kernel': s['patch_embed.proj.weight'].permute(2, 3, 1, 0),
        'embedding/bias': s['patch_embed.proj.bias'],
        'cls': s['cls_token'],
        'Transformer/posembed_input/pos_embedding': s['pos_embed'],
        'Transformer/encoder_norm/scale': s['norm.weight'],
        'Transformer/encoder_norm/bias': s['norm.bias'],
        'head/kernel': s['head.weight'].t(),
        'head/bias': s['head.bias'],
        'pre_logits/kernel': torch.randn(d, d),
        'pre_logits/bias': torch.randn(d),
    }
    i = 0
    while f'blocks.{i}.norm1.weight' in s:
        b, g = f'blocks.{i}.', f'Transformer/encoderblock_{i}/'
        att = g + 'MultiHeadDotProductAttention_1/'
        out[g + 'LayerNorm_0/scale'] = s[b + 'norm1.weight']
        out[g + 'LayerNorm_0/bias'] = s[b + 'norm1.bias']
        for j, name in enumerate(('query', 'key', 'value')):
            w = s[b + 'attn.qkv.weight'][j * d:(j + 1) * d]
            out[att + f'{name}/kernel'] = w.t().reshape(d, HEADS, hd)
            out[att + f'{name}/bias'] = s[b + 'attn.qkv.bias'][
                j * d:(j + 1) * d].reshape(HEADS, hd)
        out[att + 'out/kernel'] = s[b + 'attn.proj.weight'].t().reshape(
            HEADS, hd, d)
        out[att + 'out/bias'] = s[b + 'attn.proj.bias']
        out[g + 'LayerNorm_2/scale'] = s[b + 'norm2.weight']
        out[g + 'LayerNorm_2/bias'] = s[b + 'norm2.bias']
        out[g + 'MlpBlock_3/Dense_0/kernel'] = s[b + 'mlp.fc1.weight'].t()
        out[g + 'MlpBlock_3/Dense_0/bias'] = s[b + 'mlp.fc1.bias']
        out[g + 'MlpBlock_3/Dense_1/kernel'] = s[b + 'mlp.fc2.weight'].t()
        out[g + 'MlpBlock_3/Dense_1/bias'] = s[b + 'mlp.fc2.bias']
        i += 1
    return {k: v.contiguous().numpy() for k, v in out.items()}


def features(model, x):
    return model.forward_head(model.forward_features(x), pre_logits=True)


def converted_vit(dst, **kwargs):
    vit = VisionTransformer(arch=TINY, img_size=32, patch_size=8, **kwargs)
    vit.load_state_dict(torch.load(dst)['state_dict'])
    vit.eval()
    return vit


def test_google_npz(tmp_path):
    src_model = make_timm()
    npz = str(tmp_path / 'imagenet21k_ViT-T_8.npz')
    np.savez(npz, **google_arrays(src_model))
    # The file is Google's layout as timm itself reads it.
    check = make_timm()
    _load_weights(check, npz)
    x = torch.rand(2, 3, 32, 32)
    expected = features(src_model, x)
    torch.testing.assert_close(features(check.eval(), x), expected)

    dst = str(tmp_path / 'vit.pth')
    convert_file(convert_google_vit, 'test', [npz, dst])
    torch.testing.assert_close(converted_vit(dst)(x)[0], expected,
                               atol=1e-5, rtol=1e-5)

    # --grid stores the position embedding resized: 48x48 inputs.
    dst48 = str(tmp_path / 'vit48.pth')
    convert_file(convert_google_vit, 'test', [npz, dst48, '--grid', '6',
                                              '6'], grid_option=True)
    state = torch.load(dst48)['state_dict']
    assert state['pos_embed'].shape == (1, 1 + 36, 32)
    vit48 = VisionTransformer(arch=TINY, img_size=48, patch_size=8)
    vit48.load_state_dict(state)


def test_google_npz_errors(tmp_path):
    arrays = google_arrays(make_timm())
    bad = dict(arrays)
    bad['Transformer/encoderblock_0/Adapter/kernel'] = np.zeros(2)
    with pytest.raises(ValueError, match="'Transformer/encoderblock_0/"
                       "Adapter/kernel' has no known equivalent"):
        convert_google_vit({k: torch.from_numpy(v) for k, v in bad.items()})
    with pytest.raises(ValueError, match='Not a Google ViT'):
        convert_google_vit({'cls': torch.zeros(1)})
    # A checkpoint of another arch is refused when loaded, naming the key.
    npz = str(tmp_path / 'x.npz')
    np.savez(npz, **arrays)
    dst = str(tmp_path / 'x.pth')
    convert_file(convert_google_vit, 'test', [npz, dst])
    from vpt_mm.backbones import PromptedViT
    wide = PromptedViT(arch=dict(TINY, embed_dims=64), img_size=32,
                       patch_size=8,
                       init_cfg=dict(type='Pretrained', checkpoint=dst))
    with pytest.raises(ValueError, match='does not fit PromptedViT'):
        wide.init_weights()


def test_mae_pretraining_checkpoint(tmp_path):
    src_model = make_timm(num_classes=0)
    state = dict(src_model.state_dict())
    state.update({
        'mask_token': torch.zeros(1, 1, 16),
        'decoder_embed.weight': torch.zeros(16, 32),
        'decoder_blocks.0.norm1.weight': torch.zeros(16),
        'decoder_pred.weight': torch.zeros(192, 16),
    })
    src = str(tmp_path / 'mae_pretrain_vit_tiny.pth')
    torch.save({'model': state}, src)
    dst = str(tmp_path / 'vit.pth')
    convert_file(convert_mae_vit, 'test', [src, dst])
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(converted_vit(dst)(x)[0],
                               features(src_model, x), atol=1e-5, rtol=1e-5)

    finetuned = make_timm(global_pool='avg', fc_norm=True).state_dict()
    with pytest.raises(ValueError, match='fine-tuned MAE checkpoint'):
        convert_mae_vit(finetuned)


def test_mocov3_pretraining_checkpoint(tmp_path):
    src_model = make_timm(num_classes=0)
    encoder = src_model.state_dict()
    state = {f'module.base_encoder.{k}': v for k, v in encoder.items()}
    state.update({f'module.momentum_encoder.{k}': v + 1
                  for k, v in encoder.items()})
    state.update({
        'module.base_encoder.head.0.weight': torch.zeros(64, 32),
        'module.base_encoder.head.1.weight': torch.zeros(64),
        'module.predictor.0.weight': torch.zeros(64, 64),
    })
    src = str(tmp_path / 'vit-t-300ep.pth.tar')
    torch.save({'state_dict': state, 'epoch': 300}, src)
    dst = str(tmp_path / 'vit.pth')
    convert_file(convert_mocov3_vit, 'test', [src, dst])
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(converted_vit(dst)(x)[0],
                               features(src_model, x), atol=1e-5, rtol=1e-5)


def test_mocov3_linear_probe_checkpoint_is_refused(tmp_path):
    linear = make_timm(num_classes=10).state_dict()
    src = str(tmp_path / 'linear-vit-t-300ep.pth.tar')
    torch.save({'state_dict': {f'module.{k}': v
                               for k, v in linear.items()}}, src)
    with pytest.raises(ValueError, match='linear-classification checkpoint'):
        convert_file(convert_mocov3_vit, 'test',
                     [src, str(tmp_path / 'x.pth')])
