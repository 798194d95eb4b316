import pytest
import torch

import vpt_mm  # noqa: F401  (applies the compatibility fixes, registers)

TINY = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64)


@pytest.fixture(autouse=True)
def _seed():
    """Same random state and default registry scope for every test (a test
    loading an mmseg config leaves mmseg's scope behind otherwise)."""
    from mmengine.registry import init_default_scope
    torch.manual_seed(0)
    init_default_scope('mmpretrain')


@pytest.fixture
def pretrained(tmp_path):
    """A randomly initialised mmpretrain ViT (TINY, 32x32, 8x8 patches)
    saved as a pretrained backbone checkpoint; its path."""
    from mmpretrain.models.backbones import VisionTransformer
    path = str(tmp_path / 'backbone.pth')
    torch.save(
        dict(
            state_dict=VisionTransformer(
                arch=TINY, img_size=32, patch_size=8).state_dict()), path)
    return path


def tiny_vit(prompt_cfg=None, **kwargs):
    """A 4-layer ViT with 8x8 patches at 32x32 (16 patches)."""
    from vpt_mm.backbones import PromptedViT
    kwargs.setdefault('img_size', 32)
    kwargs.setdefault('patch_size', 8)
    return PromptedViT(arch=TINY, prompt_cfg=prompt_cfg, **kwargs)


def token_and_fused(build, prompt_cfg, **kwargs):
    """The same random model (seed 0) in token form and in fused form, its
    prompts drawn at the scale of image tokens; ``build(prompt_cfg,
    fuse_prompts=..., **kwargs)`` makes one."""
    torch.manual_seed(0)
    token = build(prompt_cfg, fuse_prompts=False, **kwargs)
    fused = build(prompt_cfg, fuse_prompts=True, **kwargs)
    with torch.no_grad():
        for name, param in token.named_parameters():
            if 'prompt' in name:
                param.normal_()
    fused.load_state_dict(token.state_dict())
    return token, fused


def perturb_tuned(model, seed, std=0.5):
    """Give a model's trainable tensors random values, as training would;
    returns the model."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.normal_(0, std)
    return model


def pytest_collection_modifyitems(config, items):
    """``cuda`` tests skip where CUDA is absent, saying why; with
    ``VPT_MM_CUDA_TIER_ON_CPU=1`` they run on the CPU (to check the tests
    themselves, tests/test_cuda.py)."""
    import os
    if torch.cuda.is_available() or os.environ.get('VPT_MM_CUDA_TIER_ON_CPU'):
        return
    skip = pytest.mark.skip(
        reason=f'needs CUDA: torch {torch.__version__} sees no GPU (run '
        '`bash tools/gpu_check.sh OUT_DIR` or `pytest -m cuda` on one)')
    for item in items:
        if 'cuda' in item.keywords:
            item.add_marker(skip)
