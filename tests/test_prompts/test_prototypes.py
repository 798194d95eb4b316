import pytest
import torch

from vpt_mm.prompts import class_prototypes, collect_features


def test_class_means():
    feats = torch.tensor([[1., 0.], [3., 0.], [0., 2.]])
    labels = torch.tensor([0, 0, 1])
    protos = class_prototypes(feats, labels, 2)
    assert torch.equal(protos, torch.tensor([[2., 0.], [0., 2.]]))


def test_collect_features_batches():
    batches = [(torch.ones(2, 3), torch.tensor([0, 1])),
               (torch.zeros(1, 3), torch.tensor([1]))]
    feats, labels = collect_features(lambda x: x * 2, batches)
    assert feats.shape == (3, 3) and labels.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match='No batch'):
        collect_features(lambda x: x, [])


@pytest.mark.parametrize('labels, match', [
    (torch.tensor([0, 3]), r'labels must be in 0..2, got 0..3'),
    (torch.tensor([0, 0]), r'classes \[1, 2\] have no sample'),
    (torch.tensor([0]), '2 features but 1 labels'),
])
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        class_prototypes(torch.rand(2, 4), labels, 3)
