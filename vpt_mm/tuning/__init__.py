"""Tuning protocols: which parameters train, and the parameter accounting."""
from ..freeze import set_frozen_modes, set_trainable
from .accounting import (
    ParamCount,
    checkpoint_sizes,
    count_parameters,
    format_param_count,
    model_for_accounting,
    saved_activations,
)
from .classifier import TunedClassifier
from .modules import Adapter, MlpClsHead, SideNetwork, add_adapters
from .protocols import (
    BIAS,
    PROTOCOLS,
    Protocol,
    backbone_patterns,
)

__all__ = [
    'BIAS', 'PROTOCOLS', 'Adapter', 'MlpClsHead', 'ParamCount', 'Protocol',
    'SideNetwork', 'TunedClassifier', 'add_adapters', 'backbone_patterns',
    'count_parameters', 'format_param_count', 'model_for_accounting',
    'checkpoint_sizes', 'saved_activations',
    'set_frozen_modes',
    'set_trainable'
]
