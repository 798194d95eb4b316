"""Pixel prompts padded around the image, for ConvNet backbones.

For ConvNets the paper (Sec. 3, "VPT for ConvNets") makes the prompts
learnable pixels in a frame of width p around the input image: the frozen
network sees a (H + 2p) x (W + 2p) image.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import PromptModule
from .config import PromptConfig

#: The ``prompt_cfg`` keys a padding prompt reads; every other key must keep
#: its default, or the config is rejected.
PADDING_KEYS = ('num_tokens', 'dropout', 'dropout_mode', 'frozen')


def _check_padding_cfg(cfg: PromptConfig) -> None:
    defaults = PromptConfig()
    for f in fields(PromptConfig):
        if f.name in PADDING_KEYS:
            continue
        value = getattr(cfg, f.name)
        default = getattr(defaults, f.name)
        same = value is default if isinstance(value, torch.Tensor) else \
            value == default
        if not same:
            raise ValueError(
                f'prompt_cfg.{f.name}={value!r} does not apply to ConvNet '
                'padding prompts (learnable pixels around the image, at the '
                f'input only); they read only {list(PADDING_KEYS)}')


#: ImageNet mean and std in [0, 1] pixel units (the official pad prompts'
#: normalisation, and the configs' data preprocessor's / 255).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPACES = ('pixel', 'normalized')


class PaddingPrompt(PromptModule):
    """A learnable frame of pixels around the input image.

    The frame has width p = ``num_tokens`` on all four sides. It is stored
    as four strips: ``top`` and ``bottom`` (1, C, p, W + 2p), ``left`` and
    ``right`` (1, C, H, p).

    ``space='pixel'`` (default, the official implementation): the strips are
    pixels in [0, 1] units, initialised U(0, 1), and normalised with
    ``mean``/``std`` in the forward pass, so they meet the image in the
    normalised space the backbone reads (the data preprocessor's
    ``(x - mean * 255) / (std * 255)``). The official lr grid for ConvNet
    prompts is for this parametrisation: a step moves a frame pixel
    ``1 / std^2`` (about 20) times further than in normalised units.

    ``space='normalized'``: the strips live in the normalised space itself
    and start at zero (the dataset mean colour).

    Prompt dropout, if any, drops normalised frame pixels to the mean colour
    (per sample, or once per batch with ``dropout_mode='batch'``); the
    official pad prompts use none.

    At an input size other than ``img_size`` the strips are resized
    bilinearly along their length (their width stays p).

    Args:
        prompt_cfg (dict | PromptConfig): Only ``num_tokens``, ``dropout``,
            ``dropout_mode`` and ``frozen`` apply; any other key set to a
            non-default value raises :class:`ValueError`.
        img_size (int | tuple[int, int]): The input size (H, W) the frame is
            made for.
        in_channels (int): Image channels. Defaults to 3.
        space (str): ``'pixel'`` or ``'normalized'`` (see above).
            Defaults to ``'pixel'``.
        mean (Sequence[float]): Per-channel mean in [0, 1] units of
            ``space='pixel'``. Defaults to ImageNet's.
        std (Sequence[float]): Per-channel std, likewise.

    Examples:
        >>> pad = PaddingPrompt(dict(num_tokens=5), 32)
        >>> pad(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 42, 42])
    """

    location = 'pad'

    def __init__(self,
                 prompt_cfg: Union[dict, PromptConfig],
                 img_size: Union[int, Sequence[int]],
                 in_channels: int = 3,
                 space: str = 'pixel',
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        cfg = PromptConfig.from_dict(prompt_cfg)
        _check_padding_cfg(cfg)
        if space not in SPACES:
            raise ValueError(f'Unknown padding prompt space {space!r}; '
                             f'choose from {SPACES}')
        if space == 'pixel' and (len(mean) != in_channels
                                 or len(std) != in_channels):
            raise ValueError(
                f'Pixel-space padding prompts need a mean and std per input '
                f'channel ({in_channels}), got mean={tuple(mean)}, '
                f'std={tuple(std)}')
        self.space = space
        if space == 'pixel':
            # Not in the state dict: the keys stay those of the four strips.
            self.register_buffer(
                'mean',
                torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                persistent=False)
            self.register_buffer(
                'std',
                torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1),
                persistent=False)
        self.cfg = cfg
        self.num_tokens = p = cfg.num_tokens
        self.embed_dims = in_channels
        h, w = (img_size, img_size) if isinstance(img_size, int) else \
            (int(img_size[0]), int(img_size[1]))
        self.img_size = (h, w)
        self.top = nn.Parameter(torch.zeros(1, in_channels, p, w + 2 * p))
        self.bottom = nn.Parameter(torch.zeros(1, in_channels, p, w + 2 * p))
        self.left = nn.Parameter(torch.zeros(1, in_channels, h, p))
        self.right = nn.Parameter(torch.zeros(1, in_channels, h, p))
        if space == 'pixel':
            for strip in (self.top, self.bottom, self.left, self.right):
                nn.init.uniform_(strip, 0.0, 1.0)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.frozen:
            for param in self.parameters():
                param.requires_grad = False

    def frame(self, size: Tuple[int, int]) -> Tuple[torch.Tensor, ...]:
        """The four strips for an input of ``size`` (H, W), in the
        normalised space of the input."""
        h, w = int(size[0]), int(size[1])
        p = self.num_tokens
        top, bottom, left, right = self.top, self.bottom, self.left, \
            self.right
        if (h, w) != self.img_size:
            top = F.interpolate(top, size=(p, w + 2 * p), mode='bilinear',
                                align_corners=False)
            bottom = F.interpolate(bottom, size=(p, w + 2 * p),
                                   mode='bilinear', align_corners=False)
            left = F.interpolate(left, size=(h, p), mode='bilinear',
                                 align_corners=False)
            right = F.interpolate(right, size=(h, p), mode='bilinear',
                                  align_corners=False)
        if self.space == 'pixel':
            return tuple((s - self.mean) / self.std
                         for s in (top, bottom, left, right))
        return top, bottom, left, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad images (B, C, H, W) to (B, C, H + 2p, W + 2p)."""
        B = x.shape[0]
        per_sample = self.cfg.dropout_mode == 'sample' and self.training
        strips = []
        for strip in self.frame(x.shape[-2:]):
            strip = strip.to(x.dtype)
            if per_sample:
                strip = self.dropout(strip.expand(B, -1, -1, -1))
            else:
                strip = self.dropout(strip).expand(B, -1, -1, -1)
            strips.append(strip)
        top, bottom, left, right = strips
        middle = torch.cat([left, x, right], dim=3)
        return torch.cat([top, middle, bottom], dim=2)

    def extra_repr(self) -> str:
        return (f'num_tokens={self.num_tokens}, img_size={self.img_size}, '
                f'space={self.space!r}, frozen={self.cfg.frozen}')
