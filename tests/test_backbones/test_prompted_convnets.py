import pytest
import torch
from mmpretrain.models.backbones import ConvNeXt, ResNet

from vpt_mm.backbones import PromptedConvNeXt, PromptedResNet
from vpt_mm.prompts import PaddingPrompt, prompt_parameter_names

PADDING = {'prompt.top', 'prompt.bottom', 'prompt.left', 'prompt.right'}


def resnet(prompt_cfg=None, **kwargs):
    kwargs.setdefault('img_size', 32)
    return PromptedResNet(depth=18, prompt_cfg=prompt_cfg, **kwargs)


def convnext(prompt_cfg=None, **kwargs):
    kwargs.setdefault('img_size', 32)
    return PromptedConvNeXt(arch='atto', prompt_cfg=prompt_cfg, **kwargs)


def parent_of(model):
    if isinstance(model, PromptedResNet):
        parent = ResNet(depth=18, out_indices=model.out_indices)
    else:
        parent = ConvNeXt(arch='atto', out_indices=list(model.out_indices),
                          gap_before_final_norm=model.gap_before_final_norm)
    skip = prompt_parameter_names(model)
    parent.load_state_dict(
        {k: v for k, v in model.state_dict().items() if k not in skip})
    parent.eval()
    return parent


def test_padding_prompt_frame():
    pad = PaddingPrompt(dict(num_tokens=2, dropout=0.0), (4, 6),
                        space='normalized')
    with torch.no_grad():
        for i, name in enumerate(['top', 'bottom', 'left', 'right']):
            getattr(pad, name).fill_(i + 1)
    x = torch.zeros(1, 3, 4, 6)
    out = pad(x)
    assert out.shape == (1, 3, 8, 10)
    assert (out[:, :, :2] == 1).all() and (out[:, :, -2:] == 2).all()
    assert (out[:, :, 2:-2, :2] == 3).all()
    assert (out[:, :, 2:-2, -2:] == 4).all()
    assert torch.equal(out[:, :, 2:-2, 2:-2], x)
    # Another input size: strips are resized along their length.
    assert pad(torch.zeros(2, 3, 8, 5)).shape == (2, 3, 12, 9)


def test_padding_prompt_init_and_dropout():
    pad = PaddingPrompt(dict(num_tokens=3, dropout=0.5), 8,
                        space='normalized')
    assert all((p == 0).all() for p in pad.parameters())
    with torch.no_grad():
        for p in pad.parameters():
            p.fill_(1.0)
    pad.train()
    out = pad(torch.zeros(4, 3, 8, 8))
    frame = out[:, :, :3]
    # Per-sample masks: samples differ; dropped pixels go to 0 (the mean).
    assert not torch.equal(frame[0], frame[1])
    assert set(frame.unique().tolist()) <= {0.0, 2.0}
    pad.eval()
    assert (pad(torch.zeros(1, 3, 8, 8))[:, :, :3] == 1).all()


def test_pixel_space_frame_is_the_official_one():
    """Official pad prompts: pixels in [0, 1], U(0, 1) init, normalised
    with ImageNet mean/std in the forward pass; gradients w.r.t. the pixel
    parameters are those w.r.t. the normalised frame divided by std."""
    pad = PaddingPrompt(dict(num_tokens=2, dropout=0.0), (4, 6))
    assert pad.space == 'pixel'
    assert set(dict(pad.named_parameters())) == {'top', 'bottom', 'left',
                                                 'right'}
    assert 'mean' not in pad.state_dict()
    for strip in pad.parameters():
        assert strip.min() >= 0 and strip.max() <= 1
        assert strip.std() > 0.1  # U(0, 1), not a constant
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = pad(torch.zeros(1, 3, 4, 6))
    torch.testing.assert_close(out[:, :, :2], (pad.top - mean) / std)
    torch.testing.assert_close(out[:, :, 2:-2, :2], (pad.left - mean) / std)
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    torch.testing.assert_close(pad.top.grad, weight[:, :, :2] / std)
    with pytest.raises(ValueError, match='mean and std per input channel'):
        PaddingPrompt(dict(num_tokens=1), 8, in_channels=1)
    with pytest.raises(ValueError, match='Unknown padding prompt space'):
        PaddingPrompt(dict(num_tokens=1), 8, space='raw')


@pytest.mark.parametrize('build', [resnet, convnext])
@pytest.mark.parametrize('size', [32, 48])
def test_network_sees_padded_image(build, size):
    model = build(dict(num_tokens=3))
    model.eval()
    parent = parent_of(model)
    with torch.no_grad():
        for p in model.prompt.parameters():
            p.normal_()
    x = torch.randn(2, 3, size, size)
    expected = parent(model.prompt(x))
    out = model(x)
    for o, e in zip(out, expected):
        torch.testing.assert_close(o, e)
    # ... which is not the unprompted output.
    assert not torch.allclose(out[-1], parent(x)[-1], atol=1e-4)


@pytest.mark.parametrize('size', [224, 160])
def test_shapes_at_224_and_another_size(size):
    model = PromptedResNet(depth=18, img_size=224, out_indices=(0, 1, 2, 3),
                           prompt_cfg=dict(num_tokens=5))
    outs = model(torch.randn(1, 3, size, size))
    side = size + 10
    sides = [-(-side // s) for s in (4, 8, 16, 32)]
    assert [tuple(o.shape[2:]) for o in outs] == [(s, s) for s in sides]
    assert [o.shape[1] for o in outs] == [64, 128, 256, 512]


def test_convnext_featmaps_for_segmentation():
    model = convnext(dict(num_tokens=2), out_indices=[0, 1, 2, 3],
                     gap_before_final_norm=False)
    outs = model(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(2, 40, 9, 9), (2, 80, 4, 4),
                                              (2, 160, 2, 2),
                                              (2, 320, 1, 1)]


@pytest.mark.parametrize('build', [resnet, convnext])
def test_frozen_backbone_contract(build):
    model = build(dict(num_tokens=2))
    model.train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == PADDING
    assert model.prompt.training
    assert not any(m.training for n, m in model.named_modules()
                   if n and not n.startswith('prompt'))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # A large lr: the random atto ConvNeXt's gradients at its bottom/right
    # border are tiny (~1e-13).
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                          lr=1e6)
    for _ in range(2):
        model(torch.randn(4, 3, 32, 32))[-1].square().mean().backward()
        assert all(getattr(model.prompt, n.split('.')[1]).grad.abs().sum()
                   > 0 for n in PADDING)
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    for key, value in before.items():
        if key in PADDING:
            assert not torch.equal(value, after[key]), key
        else:  # weights, BN running statistics and num_batches_tracked
            assert torch.equal(value, after[key]), key


def test_full_finetuning_switch():
    model = resnet(dict(num_tokens=1), freeze_backbone=False)
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    assert model.bn1.training


@pytest.mark.parametrize('cfg,match', [
    (dict(deep=True), 'prompt_cfg.deep=True does not apply'),
    (dict(location='add'), "prompt_cfg.location='add' does not apply"),
    (dict(layers=(1, 2)), 'prompt_cfg.layers'),
    (dict(share='intra'), 'prompt_cfg.share'),
    (dict(num_tokens=0), 'num_tokens'),
    (dict(colour='red'), 'Unknown prompt_cfg'),
])
@pytest.mark.parametrize('build', [resnet, convnext])
def test_bad_prompt_cfg(build, cfg, match):
    with pytest.raises(ValueError, match=match):
        build(cfg)


def test_registered_in_both_codebases():
    from mmpretrain.registry import MODELS as PRETRAIN
    from mmseg.registry import MODELS as SEG
    for cfg in (dict(type='PromptedResNet', depth=18),
                dict(type='PromptedConvNeXt', arch='atto')):
        assert type(PRETRAIN.build(cfg)).__name__ == cfg['type']
        assert type(SEG.build(cfg)).__name__ == cfg['type']
