"""The tuning protocols of the paper (Table 1): which parameters train.

This module is the one place that decides what trains. A protocol is
chosen with ``tuning=dict(type=...)`` on a :class:`TunedClassifier`
(``vpt_mm/tuning/classifier.py``). How a protocol's choice is applied
(``requires_grad``, train/eval modes) is :mod:`vpt_mm.freeze`, shared with
the prompted backbones.

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

from dataclasses import dataclass
from typing import List, Optional

import torch.nn as nn
from mmpretrain.models.backbones import (
    ConvNeXt,
    ResNet,
    SwinTransformer,
    VisionTransformer,
)

from ..prompts import PromptModule
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
#: Swin blocks trained by Partial-k, per k, as (stage from the end, blocks
#: from the end of that stage; None = the whole stage).
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
    """``'vit'``, ``'swin'`` or ``'convnet'`` for an mmpretrain backbone,
    ``'timm'`` for a :class:`~vpt_mm.backbones.TimmViT` (or its prompted
    form)."""
    from ..backbones.timm_vit import TimmViT
    if isinstance(backbone, TimmViT):
        return 'timm'
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
    if backbone_kind(backbone) == 'timm':
        return list(backbone.timm_model.blocks)
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
    if kind == 'timm':
        num = len(backbone.timm_model.blocks)
        if k > num:
            raise ValueError(f'Partial-{k}: the ViT has {num} layers')
        ids = '|'.join(str(i) for i in range(num - k, num))
        return [rf'^timm_model\.blocks\.({ids})\.', r'^timm_model\.norm\.']
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
    if name == 'Adapter' and kind == 'timm':
        raise ValueError('Adapters are placed in mmpretrain transformer '
                         f'layers; {type(backbone).__name__} has none')
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
