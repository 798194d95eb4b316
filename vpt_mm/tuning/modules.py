"""Modules the baseline protocols add to a pretrained model."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.heads import ClsHead

from ..prompts import AddedModule
from ..registry import PRETRAIN_MODELS


class Adapter(AddedModule):
    """A Pfeiffer adapter, as the official VPT code applies it:
    ``f + up(gelu(down(f)))`` on a block's FFN output ``f``, before the
    block's residual add (the block returns ``x + f + up(gelu(down(f)))``).

    The one intended difference from the official code is the
    initialisation: the down-projection (d -> d / r) keeps PyTorch's random
    init and the up-projection (d / r -> d) starts at zero, so the adapter
    starts as the identity and both projections receive gradients from the
    first step (zero-initialising both, as the official code does, leaves
    every weight but the up-projection bias without gradient forever).

    Args:
        embed_dims (int): Token width d.
        reduction (int): Reduction factor r (the paper: 8, 64, 256).
    """

    group = 'adapter'

    def __init__(self, embed_dims: int, reduction: int) -> None:
        super().__init__()
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f'Adapter reduction must be an integer >= 1, '
                             f'got {reduction!r}')
        hidden = max(1, embed_dims // reduction)
        self.down = nn.Linear(embed_dims, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, embed_dims)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


class _RunAdapter:
    """Forward hook of a block's FFN layers (the MLP, without the residual):
    their output ``f`` goes through the adapter before the FFN adds the
    residual.

    A hook (rather than wrapping the FFN) keeps every pretrained key where
    it was, so checkpoints load unchanged.
    """

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    def __call__(self, module: nn.Module, args: tuple,
                 output: torch.Tensor) -> torch.Tensor:
        return self.adapter(output)


def add_adapters(blocks: Sequence[nn.Module], reduction: int) -> None:
    """Add an adapter to the FFN of every transformer block.

    The adapter is stored as ``<block>.adapter`` and applied to the output
    of the FFN's layers (``block.ffn.layers``, mmcv's FFN MLP), before the
    FFN adds the residual: ``x + f + adapter_delta(f)`` with
    ``f = MLP(norm(x))``, the official placement.

    Args:
        blocks (Sequence[nn.Module]): Blocks with an mmcv ``FFN`` as ``ffn``
            (its ``layers`` are the MLP, ``embed_dims`` the token width).
        reduction (int): Reduction factor r.
    """
    for block in blocks:
        block.adapter = Adapter(block.ffn.embed_dims, reduction)
        block.ffn.layers.register_forward_hook(_RunAdapter(block.adapter))


class SideNetwork(nn.Module):
    """The side network of Sidetune: a small ConvNet on the image whose
    features are blended with the frozen backbone's,
    ``a * f_backbone + (1 - a) * f_side`` with ``a = sigmoid(gate)`` learned
    and starting at 0.5.

    Four 3x3 stride-2 convolutions (32, 64, 128, 256 channels, ReLU), global
    average pooling and a linear map to the backbone's feature width.

    Args:
        out_channels (int): The backbone's feature width.
        in_channels (int): Image channels. Defaults to 3.
    """

    def __init__(self, out_channels: int, in_channels: int = 3) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        for width in (32, 64, 128, 256):
            layers += [
                nn.Conv2d(in_channels, width, 3, stride=2, padding=1),
                nn.ReLU(inplace=True)
            ]
            in_channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.proj = nn.Linear(256, out_channels)
        self.gate = nn.Parameter(torch.zeros(()))

    def blend(self, images: torch.Tensor,
              feats: torch.Tensor) -> torch.Tensor:
        """Blend backbone features (B, d) with the side features of
        ``images``."""
        alpha = torch.sigmoid(self.gate)
        side = self.proj(self.features(images)).to(feats.dtype)
        return alpha * feats + (1 - alpha) * side


@PRETRAIN_MODELS.register_module()
class MlpClsHead(ClsHead):
    """A k-layer MLP classification head (the paper's Mlp-k baseline).

    ``num_layers - 1`` hidden layers of Linear, ReLU, BatchNorm1d and
    Dropout, then a linear classifier; ``num_layers=1`` is a linear head.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Feature width.
        num_layers (int): k >= 1. Defaults to 3.
        hidden_channels (int, optional): Width of the hidden layers.
            Defaults to ``in_channels``.
        dropout (float): Dropout of the hidden layers. Defaults to 0.1.
        **kwargs: Other arguments of mmpretrain's ``ClsHead`` (``loss``,
            ``topk``, ``init_cfg``...).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 num_layers: int = 3,
                 hidden_channels: Optional[int] = None,
                 dropout: float = 0.1,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f'MlpClsHead num_layers must be an integer >= 1,'
                             f' got {num_layers!r}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        hidden = hidden_channels or in_channels
        layers: List[nn.Module] = []
        width = in_channels
        for _ in range(num_layers - 1):
            layers += [
                nn.Linear(width, hidden),
                nn.ReLU(inplace=True),
                nn.BatchNorm1d(hidden),
                nn.Dropout(dropout)
            ]
            width = hidden
        self.mlp = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)

    def pre_logits(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        """The hidden layers' output for the last stage's features."""
        return self.mlp(feats[-1])

    def forward(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        """Class scores."""
        return self.fc(self.pre_logits(feats))
