"""Decode heads for frozen backbones."""
from __future__ import annotations

from typing import List

import torch
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead

from ..registry import SEG_MODELS


@SEG_MODELS.register_module()
class LinearBNHead(BaseDecodeHead):
    """A linear probe for segmentation: batch norm, then a 1x1 convolution
    per pixel, on the backbone's patch features (the linear head of DINOv2's
    segmentation evaluation).

    With ``input_transform='resize_concat'`` several feature maps are
    resized to the first one's size and concatenated first (mmseg's
    :class:`BaseDecodeHead` does that), so ``channels`` must equal the sum
    of ``in_channels``.

    Args:
        **kwargs: Arguments of mmseg's ``BaseDecodeHead``; ``norm_cfg``
            chooses the batch norm (``SyncBN`` by default, ``BN`` in one
            process).

    Examples:
        >>> head = LinearBNHead(in_channels=8, channels=8, num_classes=3,
        ...                     norm_cfg=dict(type='BN'))
        >>> head([torch.rand(2, 8, 4, 4)]).shape
        torch.Size([2, 3, 4, 4])
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault('norm_cfg', dict(type='SyncBN', requires_grad=True))
        super().__init__(**kwargs)
        in_channels = (sum(self.in_channels) if isinstance(
            self.in_channels, (list, tuple)) else self.in_channels)
        if in_channels != self.channels:
            raise ValueError(
                f'LinearBNHead classifies its input features directly: '
                f'channels must be {in_channels} (the input channels), got '
                f'{self.channels}')
        self.bn = build_norm_layer(self.norm_cfg, self.channels)[1]

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        """Class scores (B, num_classes, H, W) of the features."""
        return self.cls_seg(self.bn(self._transform_inputs(inputs)))
