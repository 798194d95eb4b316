"""The paper's Table 1 parameter columns for every protocol and backbone.

For a protocol on a backbone, one task tunes ``tuned(p) + head(C)``
parameters (p: prompt length, C: the task's classes). Serving N tasks costs
one shared frozen backbone plus every task's tuned parameters, except for
Full, which stores a whole backbone per task; the paper reports that total
as a multiple of one backbone (Full on the 24 VTAB + FGVC tasks: 24.02x).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch.nn as nn

from .accounting import count_parameters, truncate_decimals

#: Backbones of the paper: the plain mmpretrain backbone (baselines), its
#: prompted type (VPT), the neck and the feature width.
BACKBONES = {
    'vit-b16': dict(backbone=dict(type='VisionTransformer', arch='b',
                                  img_size=224, patch_size=16),
                    prompted='PromptedViT', neck=None, width=768),
    'vit-l16': dict(backbone=dict(type='VisionTransformer', arch='l',
                                  img_size=224, patch_size=16),
                    prompted='PromptedViT', neck=None, width=1024),
    'vit-h14': dict(backbone=dict(type='VisionTransformer', arch='h',
                                  img_size=224, patch_size=14),
                    prompted='PromptedViT', neck=None, width=1280),
    'swin-b': dict(backbone=dict(type='SwinTransformer', arch='base',
                                 img_size=224, window_size=7,
                                 out_indices=(3, )),
                   prompted='PromptedSwin',
                   neck=dict(type='GlobalAveragePooling'), width=1024),
    'convnext-b': dict(backbone=dict(type='ConvNeXt', arch='base'),
                       prompted='PromptedConvNeXt', neck=None, width=1024),
    'resnet-50': dict(backbone=dict(type='ResNet', depth=50,
                                    out_indices=(3, )),
                      prompted='PromptedResNet',
                      neck=dict(type='GlobalAveragePooling'), width=2048),
}


def build_tuned(backbone: str, tuning: dict, num_classes: int = 2,
                num_tokens: Optional[int] = None,
                deep: bool = True) -> nn.Module:
    """A randomly initialised :class:`TunedClassifier` of :data:`BACKBONES`.

    Args:
        backbone (str): A key of :data:`BACKBONES`.
        tuning (dict): The protocol, e.g. ``dict(type='Adapter')``.
        num_classes (int): Classes of the linear head. Defaults to 2.
        num_tokens (int, optional): p, for the VPT protocols.
        deep (bool): VPT-Deep (True) or VPT-Shallow. ConvNets have one
            kind of prompt (a pixel frame) and ignore it.
    """
    from mmpretrain.registry import MODELS
    if backbone not in BACKBONES:
        raise ValueError(f'Unknown backbone {backbone!r}; choose from '
                         f'{list(BACKBONES)}')
    spec = BACKBONES[backbone]
    cfg = copy.deepcopy(spec['backbone'])
    if tuning['type'].startswith('VPT'):
        if not num_tokens:
            raise ValueError(f'{tuning["type"]} needs num_tokens')
        cfg['type'] = spec['prompted']
        convnet = spec['prompted'] in ('PromptedConvNeXt', 'PromptedResNet')
        cfg['prompt_cfg'] = dict(num_tokens=num_tokens) if convnet else \
            dict(num_tokens=num_tokens, deep=deep)
    return MODELS.build(dict(
        _scope_='mmpretrain', type='TunedClassifier', tuning=tuning,
        backbone=cfg,
        neck=spec['neck'],
        head=dict(type='LinearClsHead', num_classes=num_classes,
                  in_channels=spec['width'])))


@dataclass
class ProtocolCost:
    """One row of the table.

    Attributes:
        name (str): Row label.
        backbone (int): Parameters of one backbone.
        tuned (int): Tuned parameters of one task without its classifier
            layer (the part that depends on the classes; an MLP head's
            hidden layers count), at the first task's p for VPT.
        per_task (list[int]): Tuned parameters of every task, head included.
        full (bool): Whether every task stores a whole backbone.
    """

    name: str
    backbone: int
    tuned: int
    per_task: List[int]
    full: bool = False

    @property
    def percent(self) -> float:
        """``tuned`` as % of the backbone."""
        return 100.0 * self.tuned / self.backbone

    @property
    def total_multiple(self) -> float:
        """Parameters for all tasks, as a multiple of one backbone."""
        shared = 0 if self.full else self.backbone
        return (shared + sum(self.per_task)) / self.backbone


def classifier_params(head: nn.Module, num_classes: int) -> int:
    """Parameters of a head's last linear layer for ``num_classes``."""
    last = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
    return num_classes * (last.in_features + int(last.bias is not None))


def protocol_cost(backbone: str, tuning: dict, class_counts: Sequence[int],
                  num_tokens: Sequence[Optional[int]] = (),
                  deep: bool = True, name: str = '') -> ProtocolCost:
    """Count one protocol over a list of tasks.

    Args:
        backbone (str): A key of :data:`BACKBONES`.
        tuning (dict): The protocol.
        class_counts (Sequence[int]): Classes of every task.
        num_tokens (Sequence[int]): p of every task (VPT protocols).
        deep (bool): VPT-Deep or VPT-Shallow.
        name (str): Row label; defaults to the protocol type.
    """
    vpt = tuning['type'].startswith('VPT')
    tokens = list(num_tokens) if vpt else [None] * len(class_counts)
    if len(tokens) != len(class_counts):
        raise ValueError(f'{len(class_counts)} tasks but {len(tokens)} '
                         'prompt lengths')
    without_classifier: Dict[Optional[int], int] = {}
    backbone_size, head = 0, None
    for p in dict.fromkeys(tokens):
        model = build_tuned(backbone, tuning, 2, p, deep)
        count = count_parameters(model)
        backbone_size, head = count.backbone, model.head
        without_classifier[p] = count.total_tuned - classifier_params(
            head, 2)
    per_task = [
        without_classifier[p] + classifier_params(head, c)
        for p, c in zip(tokens, class_counts)
    ]
    return ProtocolCost(
        name=name or tuning['type'], backbone=backbone_size,
        tuned=without_classifier[tokens[0]], per_task=per_task,
        full=tuning['type'] == 'Full')


def format_table(rows: Sequence[ProtocolCost], num_tasks: int) -> str:
    """A markdown table: tuned parameters, % of the backbone (truncated to
    two decimals, as the paper), total for the tasks as a multiple."""
    lines = [
        f'| protocol | tuned params (one task, w/o classifier) | '
        f'% of backbone | '
        f'total params for {num_tasks} tasks |',
        '|---|---|---|---|',
    ]
    for row in rows:
        lines.append(f'| {row.name} | {row.tuned:,} | '
                     f'{truncate_decimals(row.percent)}% | '
                     f'{row.total_multiple:.2f}x |')
    return '\n'.join(lines)
