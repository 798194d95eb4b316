import pytest
import timm
import torch
from mmpretrain.models.backbones import VisionTransformer

from tests.conftest import TINY, tiny_vit
from vpt_mm.converters import (
    convert_timm_vit,
    load_source_checkpoint,
    save_backbone_checkpoint,
)


def make_timm(**kwargs):
    kwargs.setdefault('num_classes', 10)
    model = timm.create_model(
        'vit_base_patch16_224',
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=4,
        embed_dim=32,
        num_heads=2,
        mlp_ratio=2,
        **kwargs)
    return model.eval()


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_convert_and_match_timm_features(tmp_path, suffix):
    src_model = make_timm()
    src = str(tmp_path / f'timm{suffix}')
    if suffix == '.safetensors':
        from safetensors.torch import save_file
        save_file(src_model.state_dict(), src)
    else:
        torch.save(src_model.state_dict(), src)
    dst = str(tmp_path / 'converted.pth')
    save_backbone_checkpoint(
        convert_timm_vit(load_source_checkpoint(src)), dst, source=src)

    x = torch.rand(2, 3, 32, 32)
    expected = src_model.forward_head(
        src_model.forward_features(x), pre_logits=True)

    plain = VisionTransformer(arch=TINY, img_size=32, patch_size=8)
    plain.load_state_dict(torch.load(dst)['state_dict'])
    plain.eval()
    torch.testing.assert_close(plain(x)[0], expected, atol=1e-5, rtol=1e-5)

    # Loaded through init_cfg into a PromptedViT: only the prompt keys are
    # missing, the prompts keep their init, the rest is timm's weights.
    model = tiny_vit(
        dict(num_tokens=4, deep=True),
        init_cfg=dict(type='Pretrained', checkpoint=dst))
    prompts_before = model.prompt.embeddings.clone()
    model.init_weights()
    assert torch.equal(model.prompt.embeddings, prompts_before)
    state = model.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(state[key], value), key
    # 'add' prompts set to zero leave the sequence as it is: timm's output.
    model = tiny_vit(
        dict(num_tokens=16, location='add'),
        init_cfg=dict(type='Pretrained', checkpoint=dst))
    model.init_weights()
    with torch.no_grad():
        model.prompt.embeddings.zero_()
    model.eval()
    torch.testing.assert_close(model(x)[0], expected, atol=1e-5, rtol=1e-5)


def test_converted_checkpoint_resizes_pos_embed(tmp_path):
    src = make_timm()
    dst = str(tmp_path / 'converted.pth')
    save_backbone_checkpoint(convert_timm_vit(src.state_dict()), dst, 'x')
    model = tiny_vit(
        dict(num_tokens=2),
        img_size=48,
        init_cfg=dict(type='Pretrained', checkpoint=dst))
    model.init_weights()
    assert model.pos_embed.shape == (1, 1 + 36, 32)


def test_unknown_key_is_named():
    state = make_timm(global_pool='avg', fc_norm=True).state_dict()
    with pytest.raises(ValueError, match="timm ViT key 'fc_norm.weight' has "
                       'no known equivalent'):
        convert_timm_vit(state)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match='nope.pth does not exist'):
        load_source_checkpoint('nope.pth')
