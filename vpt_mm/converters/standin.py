"""A random stand-in for a config's pretrained backbone checkpoint.

For smoke runs without the real weights: the config's backbone, randomly
initialised from a fixed seed, saved in the layout its ``init_cfg``
``Pretrained`` checkpoint has (the backbone's own keys, no prompts). The
same config and seed give the same tensors on every call, so a tuned file
trained on the stand-in passes the fingerprint check when it is tested or
served later (``model.backbone.init_cfg=None`` would draw a new random
backbone every time, which the check rightly refuses).
"""
from __future__ import annotations

import copy
from typing import Dict

import torch
from mmengine.config import Config

from ..prompts import added_parameter_names

__all__ = ['standin_backbone_state']


def standin_backbone_state(cfg: Config,
                           seed: int = 0) -> Dict[str, torch.Tensor]:
    """The backbone weights of a random stand-in checkpoint for ``cfg``.

    Args:
        cfg (Config): A resolved config with ``model.backbone``.
        seed (int): The seed of the random weights. Defaults to 0.

    Returns:
        dict: The backbone's state dict without prompts (or other added
        modules), as its pretrained checkpoint holds it.
    """
    from mmengine.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.pop('init_cfg', None)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = MODELS.build(model_cfg)
        backbone = model.backbone
        backbone.init_weights()
    finally:
        torch.random.set_rng_state(state)
    added = added_parameter_names(backbone)
    state = {k: v.detach().clone() for k, v in backbone.state_dict().items()
             if k not in added}
    layout = getattr(backbone, 'checkpoint_layout', None)
    if layout is not None:
        state = layout(state)
    # A checkpoint read under a prefix (a whole classifier's, e.g. the
    # mmpretrain ConvNeXt mmseg's recipes load with prefix='backbone.').
    prefix = (cfg.model.backbone.get('init_cfg') or {}).get('prefix')
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state = {prefix + k: v for k, v in state.items()}
    return state
