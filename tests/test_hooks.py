from types import SimpleNamespace

import pytest
import torch.nn as nn

from vpt_mm.hooks import NumClassesCheckHook


def _runner(num_classes, num_dataset_classes):
    model = nn.Module()
    model.head = SimpleNamespace(num_classes=num_classes)
    dataset = SimpleNamespace(
        metainfo=dict(classes=[str(i) for i in range(num_dataset_classes)]))
    loop = SimpleNamespace(dataloader=SimpleNamespace(dataset=dataset))
    return SimpleNamespace(model=model, train_loop=loop, val_loop=loop,
                           test_loop=loop)


def test_matching_classes_pass():
    hook = NumClassesCheckHook()
    runner = _runner(6, 6)
    hook.before_train(runner)
    hook.before_val(runner)
    hook.before_test(runner)


@pytest.mark.parametrize('stage', ['train', 'val', 'test'])
def test_mismatch_is_an_error(stage):
    hook = NumClassesCheckHook()
    with pytest.raises(ValueError, match=f'predicts 100 classes but the '
                       f'{stage} dataset .* has 6'):
        getattr(hook, f'before_{stage}')(_runner(100, 6))


def test_models_without_head_are_skipped():
    runner = _runner(6, 5)
    del runner.model.head
    NumClassesCheckHook().before_train(runner)
