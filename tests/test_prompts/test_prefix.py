"""VPT-prefix: learnt keys and values per prompted layer (paper appendix)."""
import pytest
import torch

from tests.conftest import TINY
from vpt_mm.backbones import PromptedViT
from vpt_mm.checkpoints import load_tuned, save_tuned
from vpt_mm.prompts import PromptConfig
from vpt_mm.prompts.fused import prompt_kv
from vpt_mm.tuning import count_parameters


def vit(**prompt):
    torch.manual_seed(0)
    return PromptedViT(arch=TINY, img_size=32, patch_size=8,
                       prompt_cfg=prompt).eval()


def test_prefix_with_the_prompts_keys_values_is_vpt_deep():
    """A prefix whose keys/values are those VPT-Deep's prompts make gives
    VPT-Deep's outputs: VPT-prefix is VPT-Deep without the constraint that
    keys and values come from tokens through LN1 and the projection."""
    deep = vit(num_tokens=3, deep=True)
    prefix = vit(num_tokens=3, deep=True, location='prefix')
    prefix.load_state_dict({k: v for k, v in deep.state_dict().items()
                            if not k.startswith('prompt.')}, strict=False)
    heads = deep.layers[0].attn.num_heads
    with torch.no_grad():
        for i, layer in enumerate(deep.layers):
            k, v = prompt_kv(layer, deep.prompt.layer_prompts(i, 1))
            prefix.prompt.keys[i] = k[0].transpose(0, 1).reshape(3, -1)
            prefix.prompt.values[i] = v[0].transpose(0, 1).reshape(3, -1)
    dh = TINY['embed_dims'] // heads
    assert prefix.prompt.prefix_kv(0, heads, 1)[0].shape == (1, heads, 3,
                                                            dh)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(prefix(x)[-1], deep(x)[-1], atol=1e-5,
                                   rtol=1e-5)


def test_prefix_trains_counts_and_saves(tmp_path):
    model = vit(num_tokens=4, layers=(2, 3), location='prefix')
    assert model.fused_layers == (1, 2)
    model.fuse(False)  # no token form: still the prefix layers
    assert model.fused_layers == (1, 2)
    # 2 layers x (keys + values) x p x d, all of them prompts.
    count = count_parameters(model)
    assert count.tuned == {'prompt': 2 * 2 * 4 * TINY['embed_dims']}
    model.train()
    out = model(torch.randn(2, 3, 32, 32))[-1]
    (out * torch.randn_like(out)).sum().backward()
    assert model.prompt.keys.grad.abs().sum() > 0
    assert model.prompt.values.grad.abs().sum() > 0
    path = str(tmp_path / 'prefix.safetensors')
    saved = save_tuned(model, path)
    assert set(saved) == {'prompt.keys', 'prompt.values'}
    other = vit(num_tokens=4, layers=(2, 3), location='prefix')
    other.load_state_dict({k: v for k, v in model.state_dict().items()
                           if not k.startswith('prompt.')}, strict=False)
    load_tuned(other, path)
    assert torch.equal(other.prompt.keys, model.prompt.keys)


def test_prefix_settings_that_do_not_apply():
    with pytest.raises(ValueError, match="'prefix' learns keys and values"):
        PromptConfig(num_tokens=2, location='prefix', proj_dim=4)
    with pytest.raises(ValueError, match='pools prompt tokens'):
        PromptedViT(arch=TINY, img_size=32, patch_size=8,
                    out_type='avg_prompt',
                    prompt_cfg=dict(num_tokens=2, location='prefix'))
