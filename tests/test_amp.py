"""Mixed precision: CPUAmpOptimWrapper and --amp (vpt_mm/amp.py)."""
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from tests.conftest import tiny_vit
from vpt_mm.amp import CPUAmpOptimWrapper, enable_amp


def test_enable_amp_on_cpu():
    cfg = Config(dict(optim_wrapper=dict(optimizer=dict(type='SGD', lr=1))))
    enable_amp(cfg)
    assert cfg.optim_wrapper.type == (
        'AmpOptimWrapper' if torch.cuda.is_available() else
        'CPUAmpOptimWrapper')
    if not torch.cuda.is_available():
        assert cfg.optim_wrapper.dtype == 'bfloat16'
        cfg = Config(dict(optim_wrapper=dict(optimizer=dict(type='SGD'))))
        with pytest.raises(ValueError, match='float16 needs CUDA'):
            enable_amp(cfg, 'float16')


def test_bf16_training_keeps_fp32_master_weights():
    model = tiny_vit(dict(num_tokens=4, deep=True))
    head = torch.nn.Linear(32, 3)
    full = torch.nn.ModuleDict(dict(backbone=model, head=head))
    wrapper = build_optim_wrapper(
        full,
        dict(type='CPUAmpOptimWrapper',
             optimizer=dict(type='SGD', lr=0.1, momentum=0.9)))
    assert isinstance(wrapper, CPUAmpOptimWrapper)
    before = model.prompt.embeddings.detach().clone()
    x = torch.randn(2, 3, 32, 32)
    dtypes = []
    model.layers[1].attn.proj.register_forward_hook(
        lambda m, i, out: dtypes.append(out.dtype))
    for _ in range(2):
        with wrapper.optim_context(full):
            loss = head(model(x)[0]).float().logsumexp(-1).mean()
        wrapper.update_params(loss)
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert model.prompt.embeddings.dtype == torch.float32
    assert head.weight.dtype == torch.float32
    assert not torch.equal(model.prompt.embeddings, before)
    assert torch.isfinite(model.prompt.embeddings).all()
    assert 'loss_scaler' in wrapper.state_dict()


def test_fp16_on_cpu_is_an_error():
    with pytest.raises(ValueError, match='bfloat16 only'):
        CPUAmpOptimWrapper(
            dtype='float16',
            optimizer=torch.optim.SGD([torch.nn.Parameter(torch.ones(1))],
                                      lr=1))
