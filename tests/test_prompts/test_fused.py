"""The fused prompt form equals the token form (vpt_mm/prompts/fused.py)."""
import pytest
import torch

from tests.conftest import tiny_vit

OUT_TYPES = ['cls_token', 'featmap', 'avg_featmap', 'avg_prompt', 'avg_all',
             'raw']


def pair(prompt_cfg, **kwargs):
    """The same random model in token form and in fused form."""
    token = tiny_vit(prompt_cfg, fuse_prompts=False, **kwargs)
    fused = tiny_vit(prompt_cfg, fuse_prompts=True, **kwargs)
    fused.load_state_dict(token.state_dict())
    return token, fused


def deep(p=5, **kwargs):
    return dict(num_tokens=p, deep=True, dropout=0.0, **kwargs)


def test_which_layers_are_fused():
    assert tiny_vit(deep()).fused_layers == (0, 1, 2, 3)
    assert tiny_vit(dict(num_tokens=5)).fused_layers == ()  # shallow
    assert tiny_vit(dict(num_tokens=5, layers=(1, 3))).fused_layers == (0, 1)
    assert tiny_vit(dict(num_tokens=5, layers=(2, 4))).fused_layers == (1, 2,
                                                                          3)
    assert tiny_vit(deep(), out_type='avg_prompt').fused_layers == (0, 1, 2)
    assert tiny_vit(
        deep(), out_type='raw', out_indices=(1, 3)).fused_layers == (0, 2)
    assert tiny_vit(deep(), fuse_prompts=False).fused_layers == ()
    assert tiny_vit(dict(num_tokens=16, deep=True,
                         location='add')).fused_layers == ()


@pytest.mark.parametrize('out_type,with_cls',
                         [(t, True) for t in OUT_TYPES] +
                         [(t, False) for t in OUT_TYPES if t != 'cls_token'])
def test_outputs_equal_token_form(out_type, with_cls):
    kwargs = dict(out_type=out_type, out_indices=(1, 3))
    if not with_cls:
        kwargs['with_cls_token'] = False
    token, fused = pair(deep(), **kwargs)
    token.eval()
    fused.eval()
    for size in [(32, 32), (48, 32), (24, 40)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            for a, b in zip(token(x), fused(x)):
                assert a.shape == b.shape
                torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('prompt_cfg', [
    deep(),
    dict(num_tokens=3, layers=(1, 3), dropout=0.0),
    dict(num_tokens=3, layers=(3, 1), dropout=0.0),
    deep(share='inter'),
    deep(proj_dim=8),
])
def test_prompt_gradients_equal_token_form(prompt_cfg):
    token, fused = pair(prompt_cfg, out_type='avg_featmap')
    token.train()
    fused.train()
    x = torch.randn(3, 3, 32, 40)
    grads = []
    for model in (token, fused):
        model.zero_grad()
        out = model(x)[0]
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        grads.append({
            n: p.grad.clone()
            for n, p in model.named_parameters() if p.requires_grad
        })
    assert grads[0].keys() == grads[1].keys()
    assert any(k.startswith('prompt.') for k in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(
            grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4)


def test_per_sample_dropout_in_fused_training():
    model = tiny_vit(dict(num_tokens=4, deep=True, dropout=0.5))
    model.train()
    x = torch.randn(1, 3, 32, 32).expand(4, -1, -1, -1)
    out = model(x)[0]
    # The same image gets different prompts (dropped per sample).
    assert not torch.allclose(out[0], out[1])
    model.eval()
    out = model(x)[0]
    torch.testing.assert_close(out[0], out[1])


def _writes():
    """Ways to change the prompts that bump no version counter (or do):
    each gives the tensor new random values, which a LayerNorm does not
    cancel (a constant shift of every prompt vector it would)."""
    def through_data(t, new):
        t.data.copy_(new)

    def through_numpy(t, new):
        t.detach().numpy()[...] = new.numpy()

    def in_place(t, new):
        with torch.no_grad():
            t.copy_(new)
    return [through_data, through_numpy, in_place]


@pytest.mark.parametrize('write', _writes(), ids=lambda f: f.__name__)
def test_eval_outputs_follow_every_parameter_change(write):
    """No forward reuses prompt keys/values of an earlier one, however the
    prompts were changed."""
    token, fused = pair(deep())
    token.eval()
    fused.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        first = fused(x)[0]
        new = torch.randn_like(fused.prompt.embeddings)
        for model in (token, fused):
            write(model.prompt.embeddings, new)
        after = fused(x)[0]
        torch.testing.assert_close(after, token(x)[0], atol=1e-5, rtol=1e-5)
        assert (after - first).abs().max() > 1e-2
    # With gradients the graph reaches the prompts.
    fused(x)[0].sum().backward()
    assert fused.prompt.embeddings.grad is not None


def test_train_forward_without_grad_leaves_no_dropped_prompts():
    """A train-mode no_grad forward with per-batch dropout draws dropped
    prompts; the next eval forward uses the whole prompts."""
    cfg = dict(num_tokens=5, deep=True, dropout=0.9, dropout_mode='batch')
    token, fused = pair(cfg)
    token.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = token(x)[0]
        fused.train()
        fused(x)
        fused.eval()
        torch.testing.assert_close(fused(x)[0], expected, atol=1e-5,
                                   rtol=1e-5)


def test_switch_between_forms_is_idempotent_and_reversible():
    token, model = pair(deep())
    model.eval()
    token.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = token(x)[0]
        for enabled in (False, False, True, True, False, True):
            model.fuse(enabled)
            assert model.fused_layers == ((0, 1, 2, 3) if enabled else ())
            torch.testing.assert_close(model(x)[0], expected, atol=1e-5,
                                       rtol=1e-5)
        model.train()
        model.eval()
        torch.testing.assert_close(model(x)[0], expected, atol=1e-5,
                                   rtol=1e-5)


def test_per_batch_dropout_shares_one_mask():
    model = tiny_vit(
        dict(num_tokens=4, deep=True, dropout=0.5, dropout_mode='batch'))
    model.train()
    assert model.prompt.layer_prompts(0, 4).shape == (1, 4, 32)
    x = torch.randn(1, 3, 32, 32).expand(4, -1, -1, -1)
    out = model(x)[0]
    torch.testing.assert_close(out[0], out[3])
    with pytest.raises(ValueError, match="Unknown prompt dropout_mode"):
        tiny_vit(dict(num_tokens=4, dropout_mode='layer'))
