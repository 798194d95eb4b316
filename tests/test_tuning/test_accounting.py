"""What autograd keeps for prompt gradients (vpt_mm.tuning.accounting)."""
import pytest
import torch

from tests.conftest import TINY, tiny_vit
from vpt_mm.tuning import saved_activations

B, P = 2, 3
N = 1 + (32 // 8)**2  # [CLS] + 4x4 patches
C, HIDDEN, LAYERS = TINY['embed_dims'], TINY['feedforward_channels'], 4


def saved_bytes(model, size=32):
    model.train()
    x = torch.randn(B, 3, size, size)
    with saved_activations(model) as saved:
        out = model(x)
        loss = sum(o.float().square().sum() for o in out)
    loss.backward()  # what was saved is what backward needs
    return sum(saved.values())


def test_fused_vpt_deep_keeps_only_what_input_gradients_need():
    """Per layer: the LayerNorm inputs, q, k and v (prompts included), the
    attention output and the GELU input, as a frozen layer's input gradient
    needs them; no input of a frozen linear layer (those serve weight
    gradients, never computed)."""
    model = tiny_vit(dict(num_tokens=P, deep=True, dropout=0.0))
    per_layer = (4 * B * N * C  # LN2 input, q, attention output, LN1 input
                 + 2 * B * (P + N) * C  # k, v with the prompts'
                 + B * N * HIDDEN)  # GELU input
    # Layer 1's input has no gradient (nothing before it trains), the final
    # norm's input is kept.
    required = 4 * (LAYERS * per_layer - B * N * C + B * N * C)
    total = saved_bytes(model)
    # On top: LayerNorm statistics, attention log-sum-exps and the prompts'
    # LayerNorm inputs, less than half of one (B, N, C) tensor per layer,
    # the smallest input of a frozen linear layer.
    assert required <= total < required + 4 * LAYERS * B * N * C // 2


@pytest.mark.parametrize('build', ['vit', 'swin'])
def test_fused_and_checkpointed_forms_save_less(build):
    if build == 'vit':
        def make(**kw):
            torch.manual_seed(0)
            return tiny_vit(dict(num_tokens=P, deep=True, dropout=0.0), **kw)
    else:
        from tests.test_backbones.test_prompted_swin import tiny_swin

        def make(**kw):
            torch.manual_seed(0)
            return tiny_swin(dict(num_tokens=P, deep=True, dropout=0.0),
                             out_type='avg_featmap', out_indices=(1, ), **kw)
    token = saved_bytes(make(fuse_prompts=False))
    fused = saved_bytes(make())
    checkpointed = saved_bytes(make(with_cp=True))
    assert fused < 0.9 * token
    # Checkpoints keep each block's input (and prompt keys/values) only.
    assert checkpointed < 0.35 * fused
