import math

import pytest
import torch

from vpt_mm.prompts import VisualPrompt

D, L, PATCH, GRID = 32, 4, 8, (4, 4)


def make(cfg, **kwargs):
    return VisualPrompt(cfg, D, L, PATCH, GRID, **kwargs)


@pytest.mark.parametrize('cfg, shape', [
    (dict(num_tokens=5), (1, 5, D)),
    (dict(num_tokens=5, deep=True), (L, 5, D)),
    (dict(num_tokens=5, deep=True, share='intra'), (L, 1, D)),
    (dict(num_tokens=5, deep=True, share='inter'), (1, 5, D)),
    (dict(num_tokens=5, deep=True, share='all'), (1, 1, D)),
    (dict(num_tokens=5, layers=(2, 3)), (2, 5, D)),
    (dict(num_tokens=5, proj_dim=8), (1, 5, 8)),
])
def test_parameter_shapes(cfg, shape):
    assert tuple(make(cfg).embeddings.shape) == shape


def test_random_init_bound():
    prompt = make(dict(num_tokens=200, deep=True))
    bound = math.sqrt(6.0 / (3 * PATCH * PATCH + D))
    assert prompt.embeddings.abs().max() <= bound
    assert prompt.embeddings.abs().max() > 0.9 * bound


def test_sharing_repeats_vectors():
    prompt = make(dict(num_tokens=3, deep=True, share='all', dropout=0.0))
    first = prompt.prompt_set(0)
    assert torch.equal(first[0], first[2])
    assert torch.equal(first, prompt.prompt_set(3))
    inter = make(dict(num_tokens=3, deep=True, share='inter'))
    assert torch.equal(inter.prompt_set(0), inter.prompt_set(2))


def test_cls_init_from_tensor_and_file(tmp_path):
    protos = torch.randn(7, D)
    prompt = make(dict(num_tokens=7, init='cls', cls_init=protos))
    assert torch.equal(prompt.embeddings[0], protos)
    torch.save(protos, tmp_path / 'protos.pt')
    deep = make(
        dict(
            num_tokens=7,
            deep=True,
            init='cls',
            cls_init=str(tmp_path / 'protos.pt')))
    assert torch.equal(deep.embeddings[3], protos)


@pytest.mark.parametrize('protos, match', [
    (torch.randn(7, D + 1), r'shape \(C, d\) .* d=32'),
    (torch.randn(6, D), 'holds 6 class prototypes, so num_tokens must be 6'),
    (torch.randn(3, 7, D), 'num_prompt_sets=1'),
])
def test_cls_init_wrong_shape(protos, match):
    with pytest.raises(ValueError, match=match):
        make(dict(num_tokens=7, init='cls', cls_init=protos))


def test_add_needs_one_prompt_per_patch():
    with pytest.raises(ValueError, match='must equal the number of patches '
                       '16'):
        make(dict(num_tokens=5, location='add'))


def test_frozen_prompts():
    prompt = make(dict(num_tokens=4, proj_dim=8, frozen=True))
    assert not any(p.requires_grad for p in prompt.parameters())


def test_insert_extends_then_replaces():
    prompt = make(dict(num_tokens=3, deep=True, dropout=0.0))
    x = torch.randn(2, 1 + 16, D)
    y = prompt.insert(x, 0, num_extra_tokens=1)
    assert y.shape == (2, 1 + 3 + 16, D)
    assert torch.equal(y[:, 1:4], prompt.prompt_set(0).expand(2, -1, -1))
    z = prompt.insert(y, 1, num_extra_tokens=1)
    assert z.shape == y.shape
    assert torch.equal(z[:, 1:4], prompt.prompt_set(1).expand(2, -1, -1))
    assert torch.equal(z[:, 4:], x[:, 1:])
    extra, prompts, patches = prompt.split(z, 1, 16)
    assert extra.shape[1] == 1 and prompts.shape[1] == 3
    assert torch.equal(patches, x[:, 1:])


def test_dropout_only_in_training():
    prompt = make(dict(num_tokens=50, dropout=0.5))
    prompt.train()
    assert (prompt.batch_prompts(0, 4) == 0).any()
    prompt.eval()
    assert not (prompt.batch_prompts(0, 4) == 0).any()
