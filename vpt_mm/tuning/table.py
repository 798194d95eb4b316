"""The paper's Table 1 parameter columns for every protocol and backbone.

For a protocol on a backbone, one task tunes ``tuned(p) + head(C)``
parameters (p: prompt length, C: the task's classes). Serving N tasks costs
one shared frozen backbone plus every task's tuned parameters, except for
Full, which stores a whole backbone per task; the paper reports that total
as a multiple of one backbone (Full on the 24 VTAB + FGVC tasks: 24.02x).
"""
from __future__ import annotations

import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch.nn as nn

from .accounting import count_parameters, truncate_decimals

#: Backbones of the paper, each the model config
#: ``configs/_base_/models/vpt_<name>.py`` (the one the benchmark configs
#: inherit), and timm's foundation models, each the model of
#: ``configs/vtab/vpt_deep_<name>.py``; the baselines use the same backbone
#: without prompts.
BACKBONES = ('vit-b16', 'vit-l16', 'vit-h14', 'swin-b', 'convnext-b',
             'resnet-50', 'dinov2-b14', 'clip-b16', 'siglip-b16',
             'eva02-b14')
#: The backbones whose model is a benchmark config's (timm models).
_FROM_VTAB = ('dinov2-b14', 'clip-b16', 'siglip-b16', 'eva02-b14')
#: The repository's configs folder (an editable install's checkout).
CONFIGS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))), 'configs')


def model_config(backbone: str, configs: str = CONFIGS) -> dict:
    """The VPT model config of a backbone of :data:`BACKBONES`, read from
    ``configs/_base_/models/vpt_<backbone>.py`` (timm models:
    ``configs/vtab/vpt_deep_<backbone>.py``).

    Raises:
        ValueError: For another backbone name.
        FileNotFoundError: Naming the config file, if ``configs`` lacks it
            (a non-editable install has no configs folder: pass the
            checkout's).
    """
    from mmengine.config import Config
    if backbone not in BACKBONES:
        raise ValueError(f'Unknown backbone {backbone!r}; choose from '
                         f'{list(BACKBONES)}')
    path = (osp.join(configs, 'vtab', f'vpt_deep_{backbone}.py')
            if backbone in _FROM_VTAB else
            osp.join(configs, '_base_', 'models', f'vpt_{backbone}.py'))
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} does not exist: the parameter table reads the model '
            "configs of vpt_mm's checkout (configs/); pass its folder")
    return Config.fromfile(path).model.to_dict()


def build_tuned(backbone: str, tuning: dict, num_classes: int = 2,
                num_tokens: Optional[int] = None,
                deep: bool = True, configs: str = CONFIGS) -> nn.Module:
    """A randomly initialised :class:`TunedClassifier` of a backbone of
    :data:`BACKBONES` (its config, :func:`model_config`).

    Args:
        backbone (str): A name of :data:`BACKBONES`.
        tuning (dict): The protocol, e.g. ``dict(type='Adapter')``.
        num_classes (int): Classes of the linear head. Defaults to 2.
        num_tokens (int, optional): p, for the VPT protocols.
        deep (bool): VPT-Deep (True) or VPT-Shallow. ConvNets have one
            kind of prompt (a pixel frame) and ignore it.
        configs (str): The configs folder. Defaults to :data:`CONFIGS`.
    """
    from mmpretrain.registry import MODELS

    from ..backbones import PromptedConvNeXt, PromptedResNet
    from ..backbones.frozen import unprompted_model_cfg
    from ..registry import PRETRAIN_MODELS
    cfg = model_config(backbone, configs)
    cfg['backbone'].pop('init_cfg', None)
    if tuning['type'].startswith('VPT'):
        if not num_tokens:
            raise ValueError(f'{tuning["type"]} needs num_tokens')
        convnet = issubclass(PRETRAIN_MODELS.get(cfg['backbone']['type']),
                             (PromptedConvNeXt, PromptedResNet))
        cfg['backbone']['prompt_cfg'] = dict(num_tokens=num_tokens) \
            if convnet else dict(num_tokens=num_tokens, deep=deep)
    else:
        cfg = unprompted_model_cfg(cfg)
    cfg.update(_scope_='mmpretrain', type='TunedClassifier', tuning=tuning)
    cfg['head'] = dict(cfg['head'], num_classes=num_classes)
    return MODELS.build(cfg)


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
        backbone (str): A name of :data:`BACKBONES`.
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
