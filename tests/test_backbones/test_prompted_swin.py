import pytest
import torch
from mmpretrain.models.backbones import SwinTransformer

from tests.conftest import token_and_fused
from vpt_mm.backbones import PromptedSwin
from vpt_mm.backbones.swin import prompted_swin_block
from vpt_mm.prompts import prompt_parameter_names

# Two stages, window 4: at 32x32 stage 1 is 8x8 (4 windows, shifted blocks),
# stage 2 is 4x4 (one window).
ARCH = dict(embed_dims=16, depths=[2, 2], num_heads=[2, 4])


def tiny_swin(prompt_cfg=None, **kwargs):
    kwargs.setdefault('img_size', 32)
    kwargs.setdefault('window_size', 4)
    kwargs.setdefault('out_indices', (0, 1))
    kwargs.setdefault('drop_path_rate', 0.0)
    return PromptedSwin(arch=ARCH, prompt_cfg=prompt_cfg, **kwargs)


def parent_of(model, **kwargs):
    kwargs.setdefault('img_size', 32)
    kwargs.setdefault('window_size', 4)
    kwargs.setdefault('out_indices', (0, 1))
    kwargs.setdefault('drop_path_rate', 0.0)
    parent = SwinTransformer(arch=ARCH, **kwargs)
    state = {
        k: v
        for k, v in model.state_dict().items()
        if k not in prompt_parameter_names(model)
    }
    parent.load_state_dict(state)
    parent.eval()  # mmpretrain's train() returns None
    return parent


@pytest.mark.parametrize('shift', [0, 1])
@pytest.mark.parametrize('hw', [(8, 8), (6, 10)])
def test_block_without_prompts_equals_parent_block(shift, hw):
    model = tiny_swin().eval()
    block = model.stages[0].blocks[shift]
    x = torch.randn(2, hw[0] * hw[1], 16)
    expected = block(x, hw)
    out, prompts = prompted_swin_block(block, x, hw, x.new_zeros(2, 0, 16))
    assert prompts.shape == (2, 0, 16)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('size', [32, 48])
def test_prompt_free_stages_equal_parent(size):
    # Prompts only in the last stage (blocks 3..4): stage 1 is untouched.
    model = tiny_swin(dict(num_tokens=3, layers=(3, 4))).eval()
    parent = parent_of(model)
    x = torch.randn(2, 3, size, size)
    out, ref = model(x), parent(x)
    torch.testing.assert_close(out[0], ref[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[1], ref[1], atol=1e-4)


@pytest.mark.parametrize('size,grids', [(32, [(8, 8), (4, 4)]),
                                        (64, [(16, 16), (8, 8)])])
@pytest.mark.parametrize('deep', [False, True])
def test_featmap_shapes(size, grids, deep):
    model = tiny_swin(dict(num_tokens=5, deep=deep))
    outs = model(torch.randn(2, 3, size, size))
    assert [tuple(o.shape) for o in outs] == [(2, 16, *grids[0]),
                                              (2, 32, *grids[1])]


@pytest.mark.parametrize('size', [224, 256])
def test_swin_tiny_shapes_at_224_and_another_size(size):
    model = PromptedSwin(arch='tiny', img_size=224, out_indices=(0, 1, 2, 3),
                         prompt_cfg=dict(num_tokens=10, deep=True))
    with torch.no_grad():
        outs = model(torch.randn(1, 3, size, size))
    sides = [size // s for s in (4, 8, 16, 32)]
    assert [tuple(o.shape[1:]) for o in outs] == [
        (c, s, s) for c, s in zip((96, 192, 384, 768), sides)]
    assert len(model.prompt) == 4


def test_prompt_modules_per_stage():
    deep = tiny_swin(dict(num_tokens=5, deep=True))
    assert sorted(deep.prompt.keys()) == ['0', '1']
    assert deep.prompt['0'].embeddings.shape == (2, 5, 16)
    assert deep.prompt['1'].embeddings.shape == (2, 5, 32)
    shallow = tiny_swin(dict(num_tokens=5))
    assert list(shallow.prompt.keys()) == ['0']
    assert shallow.prompt['0'].layer_ids == [0]
    middle = tiny_swin(dict(num_tokens=2, layers=(2, 3)))
    assert middle.prompt['0'].layer_ids == [1]
    assert middle.prompt['1'].layer_ids == [0]
    with pytest.raises(ValueError, match='outside the model'):
        tiny_swin(dict(num_tokens=2, layers=(1, 5)))


@pytest.mark.parametrize('deep', [False, True])
def test_per_sample_independence(deep):
    """A sample's output does not depend on the rest of the batch."""
    model = tiny_swin(dict(num_tokens=3, deep=deep))
    with torch.no_grad():
        for prompt in model.prompt.values():
            prompt.embeddings.normal_()
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    batch = model(x)
    for i in range(4):
        alone = model(x[i:i + 1])
        for b, a in zip(batch, alone):
            torch.testing.assert_close(b[i:i + 1], a, atol=1e-5, rtol=1e-5)
    # And with another batch around it.
    other = torch.cat([x[:1], torch.randn(3, 3, 32, 32)])
    torch.testing.assert_close(model(other)[1][:1], batch[1][:1],
                               atol=1e-5, rtol=1e-5)


def test_prompts_are_averaged_over_windows():
    """Shallow prompts flow on from block 1 to block 2 as the mean of their
    per-window attention outputs: equal windows give equal outputs."""
    model = tiny_swin(dict(num_tokens=2, dropout=0.0)).eval()
    block = model.stages[0].blocks[0]
    # Four identical 4x4 windows (an 8x8 map tiled from one window).
    window = torch.randn(1, 4, 4, 16)
    x = window.repeat(1, 2, 2, 1).reshape(1, 64, 16)
    prompts = torch.randn(1, 2, 16)
    _, p_out = prompted_swin_block(block, x, (8, 8), prompts)
    # The same as one window alone.
    _, p_one = prompted_swin_block(block, window.reshape(1, 16, 16), (4, 4),
                                   prompts)
    torch.testing.assert_close(p_out, p_one, atol=1e-5, rtol=1e-5)


def test_frozen_backbone_contract():
    model = tiny_swin(dict(num_tokens=3, deep=True))
    model.train()
    modes = {n: m.training for n, m in model.named_modules()}
    assert all(mode == n.startswith('prompt.') for n, mode in modes.items()
               if n not in ('', 'prompt'))
    assert modes['prompt.0'] and modes['prompt.0.dropout']
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {'prompt.0.embeddings', 'prompt.1.embeddings'}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                          lr=1.0)
    loss = sum(o.sum() for o in model(torch.randn(2, 3, 32, 32)))
    loss.backward()
    opt.step()
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith('prompt.'):
            assert not torch.equal(value, after[key]), key
        else:
            assert torch.equal(value, after[key]), key


def test_full_finetuning_switch():
    model = tiny_swin(dict(num_tokens=3), freeze_backbone=False)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize('cfg,match', [
    (dict(location='add'), "location='prepend'"),
    (dict(num_tokens=0), 'num_tokens'),
    (dict(bogus=1), 'Unknown prompt_cfg'),
])
def test_bad_prompt_cfg(cfg, match):
    with pytest.raises(ValueError, match=match):
        tiny_swin(cfg)


def test_registered_in_both_codebases():
    from mmpretrain.registry import MODELS as PRETRAIN
    from mmseg.registry import MODELS as SEG
    cfg = dict(type='PromptedSwin', arch=ARCH, img_size=32, window_size=4,
               out_indices=(1, ))
    assert isinstance(PRETRAIN.build(cfg), PromptedSwin)
    assert isinstance(SEG.build(cfg), PromptedSwin)


def test_merge_prompts_is_a_merging_of_constant_tokens():
    """A carried prompt is what patch merging makes of a 2x2 block of
    tokens that all equal it (the official repeat-4-then-merge)."""
    from vpt_mm.backbones.swin import merge_prompts
    model = tiny_swin(dict(num_tokens=2))
    down = model.stages[0].downsample
    prompts = torch.randn(3, 2, 16)
    merged = merge_prompts(down, prompts)
    assert merged.shape == (3, 2, 32)
    for k in range(2):
        const = prompts[:, k:k + 1].expand(3, 16, 16).contiguous()  # 4x4
        out, hw = down(const, (4, 4))
        assert hw == (2, 2)
        torch.testing.assert_close(out, merged[:, k:k + 1].expand(3, 4, 32))


def test_shallow_prompts_reach_the_last_stage_only_when_carried():
    """VPT-Shallow (prompts at block 1): with the official carry, the last
    stage's output depends on prompts carried through patch merging; with
    'drop' it only sees image tokens. Stage 1 is the same for both."""
    torch.manual_seed(0)
    carry = tiny_swin(dict(num_tokens=3, dropout=0.0))
    drop = tiny_swin(dict(num_tokens=3, dropout=0.0), prompt_merging='drop')
    drop.load_state_dict(carry.state_dict())
    carry.eval()
    drop.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        (c0, c1), (d0, d1) = carry(x), drop(x)
    torch.testing.assert_close(c0, d0)
    assert (c1 - d1).abs().max() > 1e-3
    # ... and in 'drop' mode the last stage is the parent's on the same
    # stage-1 output (no prompt token reaches it).
    with torch.no_grad():
        y, hw = drop.stages[0].downsample(_stage_tokens(drop, x), (8, 8))
        for block in drop.stages[1].blocks:
            y = block(y, hw)
        expected = drop.norm1(y).view(2, 4, 4, 32).permute(0, 3, 1, 2)
    torch.testing.assert_close(d1, expected)


def _stage_tokens(model, x):
    """Image tokens after stage 1 (before its norm), by a hook."""
    seen = {}

    def hook(module, args, out):
        seen['x'] = args[0]

    handle = model.stages[0].downsample.register_forward_hook(hook)
    model(x)
    handle.remove()
    return seen['x']


def test_pooling_with_prompts():
    """out_type='avg_all' (official) averages the final stage's normalised
    prompt and image tokens; 'avg_featmap' the image tokens only, which is
    the GlobalAveragePooling of the featmap output."""
    torch.manual_seed(0)
    kwargs = dict(out_indices=(1, ))
    feat = tiny_swin(dict(num_tokens=3, deep=True, dropout=0.0), **kwargs)
    avg_all = tiny_swin(dict(num_tokens=3, deep=True, dropout=0.0),
                        out_type='avg_all', **kwargs)
    avg_img = tiny_swin(dict(num_tokens=3, deep=True, dropout=0.0),
                        out_type='avg_featmap', **kwargs)
    for m in (avg_all, avg_img):
        m.load_state_dict(feat.state_dict())
    for m in (feat, avg_all, avg_img):
        m.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        (fm, ), (pooled_all, ), (pooled_img, ) = feat(x), avg_all(x), \
            avg_img(x)
    torch.testing.assert_close(pooled_img, fm.mean(dim=(2, 3)))
    assert pooled_all.shape == (2, 32)
    # 16 image tokens and 3 prompts: the prompts' mean makes the difference.
    prompt_mean = (19 * pooled_all - 16 * pooled_img) / 3
    assert (prompt_mean - pooled_img).abs().max() > 1e-3
    with pytest.raises(ValueError, match='out_indices must be'):
        tiny_swin(dict(num_tokens=1), out_type='avg_all')


def test_prompt_init_bound_from_the_stage_1_width():
    model = tiny_swin(dict(num_tokens=50, deep=True))
    bound = (6.0 / (3 * 4 * 4 + 16)) ** 0.5
    for stage in ('0', '1'):
        emb = model.prompt[stage].embeddings
        assert emb.abs().max() <= bound
        assert emb.abs().max() > 0.9 * bound


# --- Fused form (image tokens attend over the prompts' keys/values) ------

def swin_pair(prompt_cfg, **kwargs):
    """The same random model in token form and in fused form."""
    return token_and_fused(tiny_swin, prompt_cfg, **kwargs)


def test_which_blocks_are_fused():
    """A block is fused where its prompt outputs are discarded: replaced at
    the next block, dropped at patch merging, or never pooled."""
    deep = dict(num_tokens=3, deep=True)
    assert tiny_swin(deep).fused_layers == (0, 1, 2, 3)
    assert tiny_swin(deep, out_type='avg_all',
                     out_indices=(1, )).fused_layers == (0, 1, 2)
    assert tiny_swin(deep, out_type='avg_featmap',
                     out_indices=(1, )).fused_layers == (0, 1, 2, 3)
    assert tiny_swin(dict(num_tokens=3)).fused_layers == ()  # shallow
    # Block 2 ends stage 1: carried prompts reach block 3 (not prompted).
    assert tiny_swin(dict(num_tokens=3, layers=(1, 2))).fused_layers == (0, )
    assert tiny_swin(dict(num_tokens=3, layers=(1, 2)),
                     prompt_merging='drop').fused_layers == (0, 1)
    assert tiny_swin(deep, fuse_prompts=False).fused_layers == ()


@pytest.mark.parametrize('merging', ['carry', 'drop'])
@pytest.mark.parametrize('out_type', ['featmap', 'avg_all', 'avg_featmap'])
def test_fused_outputs_equal_token_form(merging, out_type):
    """At inputs whose stage-1 maps need no padding (32: 8x8, shifted
    windows), padding (40: 10x10 -> 12x12) and a non-square one."""
    kwargs = dict(prompt_merging=merging, out_type=out_type)
    if out_type != 'featmap':
        kwargs['out_indices'] = (1, )
    token, fused = swin_pair(dict(num_tokens=3, deep=True, dropout=0.0),
                             **kwargs)
    assert fused.fused_layers and not token.fused_layers
    token.eval()
    fused.eval()
    for size in [(32, 32), (40, 40), (32, 48)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            for a, b in zip(token(x), fused(x)):
                assert a.shape == b.shape
                torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('prompt_cfg', [
    dict(num_tokens=3, deep=True, dropout=0.0),
    dict(num_tokens=2, layers=(1, 3), dropout=0.0),
    dict(num_tokens=3, deep=True, share='inter', dropout=0.0),
    dict(num_tokens=3, deep=True, dropout=0.3),  # per-sample masks
])
def test_fused_prompt_gradients_equal_token_form(prompt_cfg):
    token, fused = swin_pair(prompt_cfg, out_type='avg_all',
                             out_indices=(1, ))
    grads = []
    for model in (token, fused):
        model.train()
        model.zero_grad()
        torch.manual_seed(3)  # the same dropout masks in both forms
        out = model(torch.randn(3, 3, 40, 32, generator=torch.Generator(
        ).manual_seed(2)))[0]
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        grads.append({n: p.grad.clone()
                      for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    assert any('prompt.' in k for k in grads[0])
    for name in grads[0]:
        assert grads[0][name].abs().sum() > 0
        torch.testing.assert_close(grads[1][name], grads[0][name],
                                   atol=1e-5, rtol=1e-4)


def test_fused_batch_independence_and_parameter_changes():
    token, fused = swin_pair(dict(num_tokens=3, deep=True))
    token.eval()
    fused.eval()
    x = torch.randn(3, 3, 40, 40)
    with torch.no_grad():
        batch = fused(x)
        for i in range(3):
            for b, a in zip(batch, fused(x[i:i + 1])):
                torch.testing.assert_close(b[i:i + 1], a, atol=1e-5,
                                           rtol=1e-5)
        new = torch.randn_like(fused.prompt['1'].embeddings)
        for model in (token, fused):  # a write no version counter sees
            model.prompt['1'].embeddings.data.copy_(new)
        for a, b in zip(token(x), fused(x)):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(fused(x)[1], batch[1])


def test_fused_switch_is_reversible():
    token, model = swin_pair(dict(num_tokens=2, deep=True))
    token.eval()
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = token(x)[1]
        for enabled in (False, True, True, False, True):
            model.fuse(enabled)
            assert bool(model.fused_layers) == enabled
            torch.testing.assert_close(model(x)[1], expected, atol=1e-5,
                                       rtol=1e-5)


# --- VPT-prefix ----------------------------------------------------------

def test_swin_prefix_with_the_prompts_keys_values_is_vpt_deep():
    """A prefix holding the keys/values VPT-Deep's prompts make gives
    VPT-Deep's outputs, in every stage (stage widths and heads differ)."""
    from vpt_mm.backbones.swin import swin_prompt_kv
    deep, _ = swin_pair(dict(num_tokens=3, deep=True))
    prefix = tiny_swin(dict(num_tokens=3, deep=True, location='prefix'))
    assert prefix.fused_layers == (0, 1, 2, 3)
    prefix.load_state_dict({k: v for k, v in deep.state_dict().items()
                            if not k.startswith('prompt.')}, strict=False)
    deep.eval()
    prefix.eval()
    with torch.no_grad():
        for i, stage in enumerate(deep.stages):
            for j, block in enumerate(stage.blocks):
                prompts = deep.prompt[str(i)].layer_prompts(j, 1)
                k, v = swin_prompt_kv(block, prompts)
                table = prefix.prompt[str(i)]
                table.keys[j] = k[0].transpose(0, 1).reshape(3, -1)
                table.values[j] = v[0].transpose(0, 1).reshape(3, -1)
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        for a, b in zip(deep(x), prefix(x)):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_swin_prefix_trains_counts_saves_and_refuses_prompt_pooling(
        tmp_path):
    from vpt_mm.checkpoints import load_tuned, save_tuned
    from vpt_mm.tuning import count_parameters
    model = tiny_swin(dict(num_tokens=4, layers=(2, 3), location='prefix'))
    assert model.fused_layers == (1, 2)
    model.fuse(False)  # no token form: still the prefix blocks
    assert model.fused_layers == (1, 2)
    # Block 2 (stage 1, width 16) and block 3 (stage 2, width 32), keys and
    # values, p=4 each.
    assert count_parameters(model).tuned == {'prompt': 2 * 4 * (16 + 32)}
    model.train()
    out = model(torch.randn(2, 3, 32, 32))[1]
    (out * torch.randn_like(out)).sum().backward()
    for prompt in model.prompt.values():
        assert prompt.keys.grad.abs().sum() > 0
        assert prompt.values.grad.abs().sum() > 0
    path = str(tmp_path / 'prefix.safetensors')
    assert set(save_tuned(model, path)) == {
        f'prompt.{i}.{t}' for i in '01' for t in ('keys', 'values')}
    other = tiny_swin(dict(num_tokens=4, layers=(2, 3), location='prefix'))
    other.load_state_dict({k: v for k, v in model.state_dict().items()
                           if not k.startswith('prompt.')}, strict=False)
    load_tuned(other, path)
    model.eval()
    other.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(other(x)[1], model(x)[1])
    with pytest.raises(ValueError, match="use out_type='avg_featmap'"):
        tiny_swin(dict(num_tokens=2, location='prefix'), out_type='avg_all',
                  out_indices=(1, ))


# --- Activation checkpointing -------------------------------------------

@pytest.mark.parametrize('fuse', [True, False])
def test_with_cp_gives_the_same_outputs_and_gradients(fuse):
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = tiny_swin(dict(num_tokens=3, deep=True, dropout=0.2),
                          fuse_prompts=fuse, with_cp=with_cp,
                          out_type='avg_all', out_indices=(1, ))
        model.train()
        torch.manual_seed(5)
        out = model(torch.ones(2, 3, 32, 32))[0]
        out.square().sum().backward()
        grads.append((out.detach(), [p.grad for p in model.parameters()
                                     if p.requires_grad]))
    torch.testing.assert_close(grads[1][0], grads[0][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(b, a)


@pytest.mark.parametrize('fuse', [False, True])
def test_shift_mask_is_saved_once_not_per_sample(fuse):
    """The shifted-window mask (with the relative position bias) reaches
    attention as one (1, nW * heads, Tq, Tk) tensor broadcast over the
    batch: nothing of its size times the batch is kept for backward (it
    used to be repeated to (B * nW, heads, Tq, Tk), 1.4 GB in fp32 for a
    Swin-B step at batch 128 with p = 10)."""
    B, p = 4, 3
    model = tiny_swin(dict(num_tokens=p, deep=True), img_size=32,
                      window_size=4, fuse_prompts=fuse).train()
    nW, heads, N = (32 // 4 // 4)**2, 2, 4 * 4
    Tq, Tk = (N if fuse else p + N), p + N
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.randn(B, 3, 32, 32))
    masks = [s for s in saved if len(s) == 4 and s[2:] == (Tq, Tk)]
    assert (1, nW * heads, Tq, Tk) in masks  # the first stage's shifted one
    assert not [s for s in masks if s[0] == B * nW]
