"""The tuning protocols of the paper (Table 1): which parameters train.

This module is the one place that decides what trains. A protocol is
chosen with ``tuning=dict(type=...)`` on a :class:`TunedClassifier`
(``vpt_mm/tuning/classifier.py``); the prompted backbones freeze themselves
through :func:`set_trainable` as well.

========== ============================================================
``type``   trains (besides the head, always)
========== ============================================================
Full       every backbone parameter
Linear     nothing in the backbone (a linear head)
Partial    the last ``k`` blocks and the final norm (Swin: ``k`` in
           1 = last block, 2 = last stage, 4 = last stage + the last two
           blocks of the stage before, as the reference does)
Mlp        nothing in the backbone; the head becomes a ``num_layers``-layer
           :class:`MlpClsHead`
Sidetune   a :class:`SideNetwork` blended with the frozen features
Bias       every bias term of the backbone (BitFit)
Adapter    Pfeiffer adapters with reduction ``reduction`` in every block
VPT        the prompts of a prompted backbone
VPT+Bias   the prompts and every bias term
========== ============================================================
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch.nn as nn
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm
from mmpretrain.models.backbones import (
    ConvNeXt,
    ResNet,
    SwinTransformer,
    VisionTransformer,
)

from ..prompts import AddedModule, PromptModule
from ..validation import require_bool, require_int

#: Every bias term (BitFit).
BIAS = r'(^|\.)bias$'
#: Extra ``tuning`` keys of each protocol, with their defaults.
PROTOCOLS = {
    'Full': {},
    'Linear': {},
    'Partial': {'k': 1},
    'Mlp': {'num_layers': 3},
    'Sidetune': {},
    'Bias': {},
    'Adapter': {'reduction': 8},
    'VPT': {},
    'VPT+Bias': {},
}
#: Options every protocol accepts.
COMMON = {'cache_features': False}
#: Swin blocks trained by Partial-k, per k: (stage from the end, blocks from
#: the end of that stage; None = the whole stage).
SWIN_PARTIAL = {1: ((1, 1), ), 2: ((1, None), ), 4: ((1, None), (2, 2))}


@dataclass
class Protocol:
    """A validated ``tuning`` config."""

    type: str
    k: int = 1
    num_layers: int = 3
    reduction: int = 8
    cache_features: bool = False

    @classmethod
    def from_dict(cls, cfg: Optional[dict]) -> 'Protocol':
        """Parse ``tuning=dict(type=..., **options)``."""
        if cfg is None:
            cfg = dict(type='VPT')
        if not isinstance(cfg, dict) or 'type' not in cfg:
            raise ValueError("tuning must be a dict with a 'type' key, e.g. "
                             f"dict(type='Linear'), got {cfg!r}")
        cfg = dict(cfg)
        kind = cfg.pop('type')
        if kind not in PROTOCOLS:
            raise ValueError(f'Unknown tuning type {kind!r}; choose from '
                             f'{list(PROTOCOLS)}')
        allowed = {**PROTOCOLS[kind], **COMMON}
        unknown = sorted(set(cfg) - set(allowed))
        if unknown:
            raise ValueError(f'tuning type {kind!r} takes {sorted(allowed)}'
                             f', not {unknown}')
        require_bool('tuning.cache_features',
                     cfg.get('cache_features', False))
        if cfg.get('cache_features') and kind not in ('Linear', 'Mlp'):
            raise ValueError('cache_features applies to Linear and Mlp, whose'
                             f' backbone is frozen and unprompted, not {kind}')
        for key in ('k', 'num_layers', 'reduction'):
            value = cfg.get(key, 1)
            require_int(f'tuning.{key}', value, minimum=1)
        return cls(type=kind, **cfg)


def backbone_kind(backbone: nn.Module) -> str:
    """``'vit'``, ``'swin'`` or ``'convnet'`` for an mmpretrain backbone."""
    if isinstance(backbone, VisionTransformer):
        return 'vit'
    if isinstance(backbone, SwinTransformer):
        return 'swin'
    if isinstance(backbone, (ConvNeXt, ResNet)):
        return 'convnet'
    raise ValueError(f'No tuning protocols for {type(backbone).__name__}; '
                     'supported: ViT, Swin, ConvNeXt, ResNet (mmpretrain and '
                     'their prompted subclasses)')


def transformer_blocks(backbone: nn.Module) -> List[nn.Module]:
    """The transformer blocks of a ViT or Swin backbone, input first."""
    if backbone_kind(backbone) == 'vit':
        return list(backbone.layers)
    if backbone_kind(backbone) == 'swin':
        return [b for stage in backbone.stages for b in stage.blocks]
    raise ValueError(f'{type(backbone).__name__} has no transformer blocks')


def partial_patterns(backbone: nn.Module, k: int) -> List[str]:
    """Parameter-name patterns of Partial-k: the last k blocks + final norm.

    Raises:
        ValueError: For ConvNets, or a k the backbone does not have.
    """
    kind = backbone_kind(backbone)
    if kind == 'vit':
        num = len(backbone.layers)
        if k > num:
            raise ValueError(f'Partial-{k}: the ViT has {num} layers')
        ids = '|'.join(str(i) for i in range(num - k, num))
        return [rf'^layers\.({ids})\.', r'^ln[12]\.']
    if kind == 'swin':
        if k not in SWIN_PARTIAL:
            raise ValueError(f'Partial-{k} is not defined for Swin; k in '
                             f'{sorted(SWIN_PARTIAL)} (1: last block, 2: '
                             'last stage, 4: last stage + two blocks)')
        num = len(backbone.stages)
        patterns = [rf'^norm{num - 1}\.']
        for back, blocks in SWIN_PARTIAL[k]:
            stage = num - back
            if blocks is None:
                patterns.append(rf'^stages\.{stage}\.')
                continue
            depth = len(backbone.stages[stage].blocks)
            ids = '|'.join(str(i) for i in range(depth - blocks, depth))
            patterns.append(rf'^stages\.{stage}\.blocks\.({ids})\.')
        return patterns
    raise ValueError('Partial-k tunes the last transformer blocks; it is not '
                     f'defined for {type(backbone).__name__}')


def set_trainable(module: nn.Module, patterns: Sequence[str] = ()) -> None:
    """Decide ``requires_grad`` of every parameter of a backbone.

    Parameters of added modules (prompts, adapters) train unless the module
    is frozen (``prompt_cfg.frozen``); a pretrained parameter trains iff its
    name matches one of ``patterns`` (``re.search``).

    Raises:
        ValueError: If a pattern matches no pretrained parameter.
    """
    added = {}
    for mod_name, sub in module.named_modules():
        if isinstance(sub, AddedModule):
            prefix = f'{mod_name}.' if mod_name else ''
            frozen = bool(getattr(getattr(sub, 'cfg', None), 'frozen', False))
            for name, _ in sub.named_parameters():
                added[prefix + name] = not frozen
    names = [n for n, _ in module.named_parameters() if n not in added]
    for pattern in patterns:
        if not any(re.search(pattern, n) for n in names):
            raise ValueError(f'trainable pattern {pattern!r} matches no '
                             f'parameter of {type(module).__name__}')
    for name, param in module.named_parameters():
        if name in added:
            param.requires_grad = added[name]
        else:
            param.requires_grad = any(re.search(p, name) for p in patterns)


def set_frozen_modes(module: nn.Module) -> None:
    """Put frozen parts in eval mode after ``module.train()``.

    A submodule whose parameters are all frozen goes to eval mode (with its
    whole subtree: no dropout, drop-path or statistics updates), and so does
    every BatchNorm whose weight is frozen (Bias tunes its bias but keeps
    its statistics). Prompt modules keep the caller's mode (prompt dropout).
    """
    mode = module.training
    for sub in module.modules():
        params = list(sub.parameters())
        if params and not any(p.requires_grad for p in params):
            sub.eval()
    for sub in module.modules():
        if isinstance(sub, _BatchNorm) and (sub.weight is None
                                            or not sub.weight.requires_grad):
            sub.eval()
    for sub in module.modules():
        if isinstance(sub, PromptModule):
            sub.train(mode)


def backbone_patterns(protocol: Protocol, backbone: nn.Module) -> List[str]:
    """The pretrained backbone parameters a protocol trains, as patterns.

    Raises:
        ValueError: If the protocol does not fit the backbone: VPT protocols
            need a prompted backbone and the others an unprompted one;
            Partial and Adapter need transformer blocks.
    """
    kind = backbone_kind(backbone)
    prompted = any(isinstance(m, PromptModule) for m in backbone.modules())
    name = protocol.type
    if name.startswith('VPT') and not prompted:
        raise ValueError(f'tuning {name!r} needs a prompted backbone '
                         '(PromptedViT, PromptedSwin, ...), got '
                         f'{type(backbone).__name__}')
    if not name.startswith('VPT') and prompted:
        raise ValueError(
            f'tuning {name!r} is a baseline without prompts; use the plain '
            f'mmpretrain backbone instead of {type(backbone).__name__}')
    if name == 'Adapter' and kind == 'convnet':
        raise ValueError('Adapters go after the FFN of transformer blocks; '
                         f'{type(backbone).__name__} has none')
    if name == 'Full':
        return ['.']
    if name == 'Partial':
        return partial_patterns(backbone, protocol.k)
    if name in ('Bias', 'VPT+Bias'):
        return [BIAS]
    return []
