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


def test_eval_cache_follows_parameter_changes():
    token, fused = pair(deep())
    token.eval()
    fused.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        first = fused(x)[0]
        assert len(fused._kv_cache._kv) == 4
        torch.testing.assert_close(fused(x)[0], first)  # reused
        for model in (token, fused):  # an in-place update
            model.prompt.embeddings.add_(0.5)
        torch.testing.assert_close(fused(x)[0], token(x)[0], atol=1e-5,
                                   rtol=1e-5)
        assert not torch.allclose(fused(x)[0], first)
        state = {k: v + 1 for k, v in token.state_dict().items()
                 if k.startswith('prompt.')}
        token.load_state_dict(state, strict=False)
        fused.load_state_dict(state, strict=False)
        torch.testing.assert_close(fused(x)[0], token(x)[0], atol=1e-5,
                                   rtol=1e-5)
    # With gradients the cache is not used (the graph must reach prompts).
    out = fused(x)[0]
    out.sum().backward()
    assert fused.prompt.embeddings.grad is not None


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
