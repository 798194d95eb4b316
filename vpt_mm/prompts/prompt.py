"""Visual prompts: made, initialised, inserted and dropped in one place.

Visual Prompt Tuning (Jia et al., ECCV 2022, arXiv 2203.12119).

:class:`VisualPrompt` is plain torch and knows nothing about a particular
backbone. A prompted backbone builds one, calls :meth:`VisualPrompt.insert`
on the token sequence at the input of every layer, and
:meth:`VisualPrompt.split` to separate prompt tokens from image tokens when it
formats its output. Token sequences are laid out as
``[extra tokens (e.g. CLS), prompts, patches]``; prompts are inserted after
the position embedding and have none of their own.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import PromptModule
from .config import PromptConfig, load_cls_init


def _pair(value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def resize_grid(grid: torch.Tensor, src: Tuple[int, int],
                dst: Tuple[int, int]) -> torch.Tensor:
    """Bicubically resize a (N, h*w, C) token grid from ``src`` to ``dst``."""
    if tuple(src) == tuple(dst):
        return grid
    n, _, c = grid.shape
    grid = grid.reshape(n, *src, c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=dst, mode='bicubic', align_corners=False)
    return grid.flatten(2).transpose(1, 2)


class VisualPrompt(PromptModule):
    """Learnable visual prompts for a layered token backbone.

    The prompts enter the sequence at the input of the first layer of the
    configured range; at every later layer of the range the previous layer's
    prompt outputs are discarded and replaced by that layer's own prompts
    (VPT-Deep). After the range the prompt outputs flow on through the
    remaining layers like VPT-Shallow prompts.

    Parameters (keys under the backbone's ``prompt.`` prefix):

    - ``embeddings`` (S, V, D): token prompts for ``'prepend'``/``'add'``;
      S = 1 for ``share`` in ``('inter', 'all')`` else the number of prompted
      layers, V = 1 for ``share`` in ``('intra', 'all')`` else p, and
      D = ``proj_dim`` or d.
    - ``proj.weight``/``proj.bias``: the prompt projection, with ``proj_dim``.
    - ``pixels`` (p, C, ph, pw): ``'prepend-pixel'``: p learnable image
      patches embedded by the backbone's own (frozen) patch projection.
    - ``channels`` (1, p, H, W) and ``channel_proj.weight`` (d, p, ph, pw):
      ``'concat-channel'``: p learnable extra input channels and the new,
      trainable slice of the patch-projection kernel that reads them
      (zero-initialised, so the model starts as the pretrained one). The
      pretrained RGB kernel stays frozen.

    Args:
        prompt_cfg (dict | PromptConfig): See :class:`PromptConfig`.
        embed_dims (int): Token width d.
        num_layers (int): Number of layers of the backbone.
        patch_size (int | tuple[int, int]): Patch size, for the random init
            bound sqrt(6 / (3 * ph * pw + d)) and pixel-space prompts.
        grid_size (tuple[int, int]): Patch grid at the pre-training input
            size; needed by ``'add'`` (p must equal h * w) and
            ``'concat-channel'``.
        in_channels (int): Image channels. Defaults to 3.
        init_dims (int, optional): The width d in the random init bound, if
            not the prompt width (Swin: the official code uses the stage-1
            width for every stage). Defaults to None.

    Examples:
        >>> prompt = VisualPrompt(dict(num_tokens=5, deep=True), 192, 12, 16,
        ...                       (14, 14))
        >>> x = torch.rand(2, 1 + 196, 192)
        >>> prompt.insert(x, 0, num_extra_tokens=1).shape
        torch.Size([2, 202, 192])
    """

    def __init__(self,
                 prompt_cfg: Union[dict, PromptConfig],
                 embed_dims: int,
                 num_layers: int,
                 patch_size: Union[int, Sequence[int]],
                 grid_size: Sequence[int],
                 in_channels: int = 3,
                 init_dims: Optional[int] = None) -> None:
        super().__init__()
        cfg = PromptConfig.from_dict(prompt_cfg)
        self.cfg = cfg
        self.location = cfg.location
        self.num_tokens = cfg.num_tokens
        self.embed_dims = embed_dims
        self.grid_size = _pair(grid_size)
        self.patch_size = _pair(patch_size)
        self.layer_ids = cfg.layer_ids(num_layers)
        self._index = {layer: i for i, layer in enumerate(self.layer_ids)}
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj: Optional[nn.Linear] = None

        ph, pw = self.patch_size
        width = cfg.proj_dim or embed_dims
        bound = math.sqrt(6.0 / float(3 * ph * pw + (init_dims or width)))
        num_patches = self.grid_size[0] * self.grid_size[1]

        if self.location == 'prepend-pixel':
            self.pixels = nn.Parameter(
                torch.empty(self.num_tokens, in_channels, ph, pw))
            nn.init.uniform_(self.pixels, -bound, bound)
        elif self.location == 'concat-channel':
            size = (self.grid_size[0] * ph, self.grid_size[1] * pw)
            self.channels = nn.Parameter(
                torch.empty(1, self.num_tokens, *size))
            nn.init.uniform_(self.channels, -bound, bound)
            self.channel_proj = nn.Conv2d(
                self.num_tokens, embed_dims, self.patch_size,
                stride=self.patch_size, bias=False)
            nn.init.zeros_(self.channel_proj.weight)
        elif self.location == 'prefix':
            # Each prompted layer's attention keys and values, learnt
            # directly (VPT-prefix), initialised as the prompts are.
            self.keys = nn.Parameter(torch.empty(*self._table_shape(),
                                                 embed_dims))
            self.values = nn.Parameter(torch.empty(*self._table_shape(),
                                                   embed_dims))
            nn.init.uniform_(self.keys, -bound, bound)
            nn.init.uniform_(self.values, -bound, bound)
        else:
            if self.location == 'add' and self.num_tokens != num_patches:
                raise ValueError(
                    "prompt location 'add' adds one prompt to each patch "
                    f'embedding: num_tokens must equal the number of patches '
                    f'{num_patches} ({self.grid_size[0]}x{self.grid_size[1]})'
                    f', got {self.num_tokens}')
            self.embeddings = nn.Parameter(
                torch.empty(*self._table_shape(), width))
            if cfg.init == 'cls':
                self._init_from_prototypes(load_cls_init(cfg.cls_init))
            else:
                nn.init.uniform_(self.embeddings, -bound, bound)
            if cfg.proj_dim is not None:
                self.proj = nn.Linear(cfg.proj_dim, embed_dims)
                nn.init.kaiming_normal_(
                    self.proj.weight, a=0, mode='fan_out')
                nn.init.zeros_(self.proj.bias)

        if cfg.frozen:
            for param in self.parameters():
                param.requires_grad = False

    def _table_shape(self) -> Tuple[int, int]:
        """(sets, vectors) of a table of learnt prompt vectors: one set per
        prompted layer unless shared across layers (``share='inter'`` /
        ``'all'``), p vectors per set unless shared within it
        (``'intra'`` / ``'all'``)."""
        share = self.cfg.share
        return (1 if share in ('inter', 'all') else len(self.layer_ids),
                1 if share in ('intra', 'all') else self.num_tokens)

    def _row(self, table: torch.Tensor, index: int) -> torch.Tensor:
        """The p vectors of the ``index``-th prompted layer in ``table``."""
        return table[min(index, table.shape[0] - 1)].expand(
            self.num_tokens, -1)

    def _dropped(self, prompts: torch.Tensor,
                 batch_size: int) -> torch.Tensor:
        """(1, p, d) prompts for a batch of ``batch_size``, with prompt
        dropout per sample or once for the batch (``dropout_mode``)."""
        if self.cfg.dropout_mode == 'batch':
            return self.dropout(prompts).expand(batch_size, -1, -1)
        return self.dropout(prompts.expand(batch_size, -1, -1))

    @property
    def _per_sample_dropout(self) -> bool:
        """Whether each sample draws its own prompt dropout mask now."""
        return (self.training and self.dropout.p > 0
                and self.cfg.dropout_mode == 'sample')

    def _init_from_prototypes(self, protos: torch.Tensor) -> None:
        num_sets, _, width = self.embeddings.shape
        if self.cfg.share in ('intra', 'all') or self.cfg.proj_dim:
            raise ValueError("init='cls' gives one d-dim prompt per class; it "
                             'cannot be combined with share=intra/all or '
                             'proj_dim')
        if protos.dim() == 2:
            protos = protos.unsqueeze(0).expand(num_sets, -1, -1)
        if protos.dim() != 3 or protos.shape[0] != num_sets or \
                protos.shape[2] != width:
            raise ValueError(
                'cls_init must have shape (C, d) or (num_prompt_sets, C, d) '
                f'with d={width} and num_prompt_sets={num_sets}, got '
                f'{tuple(protos.shape)}')
        if protos.shape[1] != self.num_tokens:
            raise ValueError(
                f'cls_init holds {protos.shape[1]} class prototypes, so '
                f'num_tokens must be {protos.shape[1]}, got '
                f'{self.num_tokens}')
        with torch.no_grad():
            self.embeddings.copy_(protos)

    # ------------------------------------------------------------------
    # Sequence layout
    # ------------------------------------------------------------------
    @property
    def has_prompt_tokens(self) -> bool:
        """Whether prompts occupy positions of their own in the sequence."""
        return self.location in ('prepend', 'prepend-pixel')

    @staticmethod
    def split(x: torch.Tensor, num_extra_tokens: int,
              num_patches: int) -> Tuple[torch.Tensor, torch.Tensor,
                                         torch.Tensor]:
        """Split a sequence into (extra tokens, prompt tokens, patches).

        The number of prompt tokens follows from the sequence length, so the
        same call works before, inside and after the prompted layer range.
        """
        n = num_extra_tokens
        p = x.shape[1] - n - num_patches
        return x[:, :n], x[:, n:n + p], x[:, n + p:]

    # ------------------------------------------------------------------
    # Making prompts
    # ------------------------------------------------------------------
    def prompt_set(self,
                   index: int,
                   embed: Optional[Callable] = None) -> torch.Tensor:
        """The prompts of the ``index``-th prompted layer as (p, d).

        Args:
            index (int): Position of the layer in ``layer_ids``.
            embed (Callable, optional): The backbone's patch embedding
                ``(p, C, ph, pw) -> (p, d)``, for ``'prepend-pixel'``.

        Returns:
            torch.Tensor: (p, d), or (h*w, d) for ``'add'``.
        """
        if self.location == 'prepend-pixel':
            if embed is None:
                raise ValueError("prompt location 'prepend-pixel' needs the "
                                 "backbone's patch embedding")
            return embed(self.pixels)
        emb = self._row(self.embeddings, index)
        return self.proj(emb) if self.proj is not None else emb

    def batch_prompts(self,
                      index: int,
                      batch_size: int,
                      embed: Optional[Callable] = None,
                      hw: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Prompts of one layer for a batch, with prompt dropout (per sample
        or once for the batch, see ``dropout_mode``).

        Args:
            index (int): Position of the layer in ``layer_ids``.
            batch_size (int): Batch size B.
            embed (Callable, optional): See :meth:`prompt_set`.
            hw (Sequence[int], optional): For ``'add'``: the current patch
                grid, to which the prompt grid is resized.

        Returns:
            torch.Tensor: (B, p, d), or (B, h*w, d) for ``'add'``.
        """
        prompts = self.prompt_set(index, embed).unsqueeze(0)
        if self.location == 'add':
            prompts = resize_grid(prompts, self.grid_size,
                                  tuple(hw or self.grid_size))
        return self._dropped(prompts, batch_size)

    # ------------------------------------------------------------------
    # Inserting prompts
    # ------------------------------------------------------------------
    def insert(self,
               x: torch.Tensor,
               layer_id: int,
               num_extra_tokens: int,
               hw: Optional[Sequence[int]] = None,
               embed: Optional[Callable] = None) -> torch.Tensor:
        """Insert (or replace) the prompts of a layer into its input.

        Args:
            x (torch.Tensor): (B, N, d) input tokens of layer ``layer_id``.
            layer_id (int): 0-based layer index.
            num_extra_tokens (int): Tokens in front of the prompts ([CLS]).
            hw (Sequence[int], optional): Current patch grid, for ``'add'``
                at input sizes other than the pre-training one.
            embed (Callable, optional): See :meth:`prompt_set`.

        Returns:
            torch.Tensor: The layer input with this layer's prompts.
        """
        index = self._index.get(layer_id)
        if index is None or self.location in ('concat-channel', 'prefix'):
            return x
        n = num_extra_tokens
        prompts = self.batch_prompts(index, x.shape[0], embed,
                                     hw).to(x.dtype)
        if self.location == 'add':
            return torch.cat([x[:, :n], x[:, n:] + prompts], dim=1)
        # Prompt outputs of an earlier layer, if the sequence holds any, are
        # discarded and this layer's own prompts put in their place.
        x = self.strip(x, n, hw, index)
        return torch.cat([x[:, :n], prompts, x[:, n:]], dim=1)

    def strip(self,
              x: torch.Tensor,
              num_extra_tokens: int,
              hw: Optional[Sequence[int]] = None,
              index: Optional[int] = None) -> torch.Tensor:
        """Remove the prompt tokens a sequence holds, if any.

        Args:
            x (torch.Tensor): (B, N, d) tokens.
            num_extra_tokens (int): Tokens in front of the prompts.
            hw (Sequence[int], optional): The patch grid; the number of
                prompt tokens present follows from the sequence length.
                Without it, a sequence entering the ``index``-th prompted
                layer is assumed to hold prompts unless ``index`` is 0.
            index (int, optional): See ``hw``.

        Returns:
            torch.Tensor: ``[extra tokens, patches]``.
        """
        n = num_extra_tokens
        if hw is not None:
            present = x.shape[1] - n - int(hw[0]) * int(hw[1])
        else:
            present = 0 if index == 0 else self.num_tokens
        if present == 0:
            return x
        return torch.cat([x[:, :n], x[:, n + present:]], dim=1)

    def layer_prompts(self,
                      layer_id: int,
                      batch_size: int,
                      embed: Optional[Callable] = None) -> torch.Tensor:
        """Token prompts of a layer for the fused form: (B, p, d) while
        per-sample prompt dropout is active, else (1, p, d), shared by the
        batch."""
        if not self.has_prompt_tokens or layer_id not in self._index:
            raise ValueError(f'Layer {layer_id} has no prompt tokens')
        return self.batch_prompts(
            self._index[layer_id],
            batch_size if self._per_sample_dropout else 1, embed)

    def prefix_kv(self, layer_id: int, num_heads: int,
                  batch_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """VPT-prefix: a layer's learnt keys and values, per head, with
        prompt dropout: (B', heads, p, d / heads) each, B' the batch size
        while per-sample dropout is active, else 1."""
        if self.location != 'prefix' or layer_id not in self._index:
            raise ValueError(f'Layer {layer_id} has no prefix keys/values')
        index = self._index[layer_id]
        b = batch_size if self._per_sample_dropout else 1
        k, v = (self._dropped(self._row(table, index).unsqueeze(0), b)
                .reshape(b, self.num_tokens, num_heads, -1).transpose(1, 2)
                for table in (self.keys, self.values))
        return k, v

    def embed_channels(self, hw: Sequence[int]) -> torch.Tensor:
        """The ``'concat-channel'`` contribution to the patch embeddings.

        Equivalent to concatenating the learnable channels to the image and
        running a patch projection with the extra kernel slice.

        Args:
            hw (Sequence[int]): The patch grid of the current input.

        Returns:
            torch.Tensor: (1, h*w, d), to be added to the patch embeddings.
        """
        ph, pw = self.patch_size
        size = (int(hw[0]) * ph, int(hw[1]) * pw)
        channels = self.channels
        if tuple(channels.shape[-2:]) != size:
            channels = F.interpolate(
                channels, size=size, mode='bilinear', align_corners=False)
        return self.channel_proj(channels).flatten(2).transpose(1, 2)

    def extra_repr(self) -> str:
        first, last = self.layer_ids[0] + 1, self.layer_ids[-1] + 1
        return (f'location={self.location!r}, num_tokens={self.num_tokens}, '
                f'layers={first}..{last}, share={self.cfg.share!r}, '
                f'init={self.cfg.init!r}, frozen={self.cfg.frozen}')
