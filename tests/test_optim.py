"""VPTOptimWrapperConstructor: mmengine's constructor over the trainable
parameters, without a warning per frozen tensor."""
import logging

from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper

import vpt_mm  # noqa: F401
from tests.test_checkpoints import classifier


class Records(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def build(model, **wrapper):
    logger = MMLogger.get_current_instance()
    records = Records()
    logger.addHandler(records)
    try:
        optim = build_optim_wrapper(model, dict(
            optimizer=dict(type='SGD', lr=0.1, momentum=0.9,
                           weight_decay=1e-4), **wrapper))
    finally:
        logger.removeHandler(records)
    return optim, records.messages


def trainable_ids(model):
    return {id(p) for p in model.parameters() if p.requires_grad}


def test_frozen_parameters_never_reach_the_optimizer():
    model = classifier()
    frozen = sum(1 for p in model.parameters() if not p.requires_grad)
    assert frozen > 10
    custom = dict(custom_keys={'head.fc.bias': dict(decay_mult=0.0)})
    # mmengine's own constructor warns once per frozen tensor.
    _, messages = build(model, paramwise_cfg=custom)
    assert sum('requires_grad=False' in m for m in messages) == frozen
    for paramwise in (custom, None):
        wrapper = dict(constructor='VPTOptimWrapperConstructor')
        if paramwise:
            wrapper['paramwise_cfg'] = paramwise
        optim, messages = build(model, **wrapper)
        assert not [m for m in messages if 'requires_grad=False' in m]
        assert [m for m in messages
                if f'{frozen} frozen parameter tensors' in m]
        groups = optim.optimizer.param_groups
        assert {id(p) for g in groups for p in g['params']} == \
            trainable_ids(model)
        if paramwise:  # mmengine's paramwise rules still apply
            bias = model.head.fc.bias
            group = next(g for g in groups if g['params'][0] is bias)
            assert group['weight_decay'] == 0.0
            other = next(g for g in groups if g['params'][0] is not bias)
            assert other['weight_decay'] == 1e-4
    # Nothing is left patched on the model, nor on the logger.
    assert 'named_parameters' not in vars(model.backbone)
    assert not MMLogger.get_current_instance().filters
