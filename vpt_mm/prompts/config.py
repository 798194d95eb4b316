"""The ``prompt_cfg`` interface shared by every prompted backbone.

One ``prompt_cfg`` dict drives every prompted backbone of the project. It is
parsed and validated here, once, into a :class:`PromptConfig`; unknown keys
and out-of-range values raise a :class:`ValueError` naming the problem.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Optional, Sequence, Tuple, Union

import torch

from ..validation import (
    require_bool,
    require_int,
    require_number,
    require_str,
)

LOCATIONS = ('prepend', 'add', 'prepend-pixel', 'concat-channel', 'prefix')
#: Locations whose prompts live in pixel space, in front of the patch
#: projection. They exist only at the input, i.e. for VPT-Shallow.
PIXEL_LOCATIONS = ('prepend-pixel', 'concat-channel')
INITS = ('random', 'cls')
SHARES = (None, 'intra', 'inter', 'all')
DROPOUT_MODES = ('sample', 'batch')

#: Default prompt dropout. The paper's VPT-Deep runs use 0.1, and so do the
#: reference scripts for VPT-Shallow; we use it for both.
DEFAULT_DROPOUT = 0.1


@dataclass
class PromptConfig:
    """Validated prompt settings (Jia et al., Visual Prompt Tuning, 2022).

    Args:
        num_tokens (int): Prompt length p (>= 1). For ``location='add'`` it
            must equal the number of patches m; for ``'concat-channel'`` it
            is the number of extra input channels. Defaults to 1.
        deep (bool): VPT-Deep (a new prompt set at every layer's input, the
            previous layer's prompt outputs discarded) if True, VPT-Shallow
            (first layer only) if False. Defaults to False.
        layers (tuple[int, int], optional): 1-based inclusive layer range
            ``(start, end)`` receiving prompts; overrides ``deep``. A range
            given top-down, e.g. ``(12, 3)``, means the same layers as
            ``(3, 12)`` (paper Fig. 7). Defaults to None.
        location (str): ``'prepend'`` (``[CLS, prompts, patches]``),
            ``'add'``, ``'prepend-pixel'``, ``'concat-channel'`` or
            ``'prefix'`` (VPT-prefix, paper appendix: each prompted layer
            learns p attention keys and p values directly, with no
            LayerNorm or projection of prompt tokens; the image tokens
            attend over them; PromptedViT and PromptedSwin). Defaults to
            ``'prepend'``.
        init (str): ``'random'`` (uniform in +-sqrt(6 / (3 * ph * pw + d)))
            or ``'cls'`` (class-prototype init from ``cls_init``).
            Defaults to ``'random'``.
        cls_init (str | torch.Tensor, optional): For ``init='cls'``: a tensor
            of per-class mean [CLS] embeddings of shape (C, d), or
            (num_prompt_layers, C, d), or a path to one saved with
            :func:`torch.save` (``.pt``/``.pth``) or numpy (``.npy``).
            Defaults to None.
        dropout (float): Prompt dropout probability, in training only.
            Defaults to 0.1.
        dropout_mode (str): ``'sample'``: every sample draws its own mask
            (the reference implementation); ``'batch'``: one mask for the
            whole batch, so the fused form computes each layer's prompt
            keys/values once per batch instead of once per sample.
            Defaults to ``'sample'``.
        share (str, optional): ``None``, ``'intra'`` (one vector repeated p
            times in a layer), ``'inter'`` (the same p prompts at every
            layer) or ``'all'`` (one vector everywhere). Defaults to None.
        proj_dim (int, optional): Learn p x ``proj_dim`` prompts and project
            them to d with a trainable linear layer. Defaults to None.
        frozen (bool): Keep the prompts at their init (the paper's
            "prompt-fixed" ablation). Defaults to False.
    """

    num_tokens: int = 1
    deep: bool = False
    layers: Optional[Tuple[int, int]] = None
    location: str = 'prepend'
    init: str = 'random'
    cls_init: Union[str, torch.Tensor, None] = field(default=None,
                                                     repr=False)
    dropout: float = DEFAULT_DROPOUT
    dropout_mode: str = 'sample'
    share: Optional[str] = None
    proj_dim: Optional[int] = None
    frozen: bool = False

    @classmethod
    def from_dict(cls, cfg: Union[dict, 'PromptConfig', None]) -> \
            'PromptConfig':
        """Build from a ``prompt_cfg`` dict, rejecting unknown keys."""
        if isinstance(cfg, PromptConfig):
            return cfg
        if cfg is None:
            cfg = {}
        if not isinstance(cfg, dict):
            raise TypeError(
                f'prompt_cfg must be a dict, got {type(cfg).__name__}')
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f'Unknown prompt_cfg key(s) {unknown}; '
                             f'valid keys are {sorted(known)}')
        return cls(**cfg)

    def __post_init__(self) -> None:
        if isinstance(self.num_tokens, bool) or not isinstance(
                self.num_tokens, int) or self.num_tokens < 1:
            raise ValueError('prompt_cfg.num_tokens (prompt length p) must be '
                             f'an integer >= 1, got {self.num_tokens!r}')
        require_bool('prompt_cfg.deep', self.deep)
        require_bool('prompt_cfg.frozen', self.frozen)
        self.dropout = require_number('prompt_cfg.dropout', self.dropout)
        for key in ('location', 'init', 'dropout_mode'):
            require_str(f'prompt_cfg.{key}', getattr(self, key))
        require_str('prompt_cfg.share', self.share, optional=True)
        require_int('prompt_cfg.proj_dim', self.proj_dim, optional=True)
        if self.cls_init is not None and not isinstance(
                self.cls_init, (str, torch.Tensor)) and not hasattr(
                    self.cls_init, '__array__'):
            raise ValueError('prompt_cfg.cls_init must be a path, a tensor or '
                             f'an array, got {type(self.cls_init).__name__}')
        if self.location not in LOCATIONS:
            raise ValueError(f'Unknown prompt location {self.location!r}; '
                             f'choose from {LOCATIONS}')
        if self.init not in INITS:
            raise ValueError(f'Unknown prompt init {self.init!r}; '
                             f'choose from {INITS}')
        if self.share not in SHARES:
            raise ValueError(f'Unknown prompt share {self.share!r}; '
                             f'choose from {SHARES}')
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError('prompt_cfg.dropout must be in [0, 1), got '
                             f'{self.dropout!r}')
        if self.dropout_mode not in DROPOUT_MODES:
            raise ValueError(f'Unknown prompt dropout_mode '
                             f'{self.dropout_mode!r}; choose from '
                             f'{DROPOUT_MODES}')
        if self.proj_dim is not None and (not isinstance(self.proj_dim, int)
                                          or self.proj_dim < 1):
            raise ValueError('prompt_cfg.proj_dim must be None or an integer '
                             f'>= 1, got {self.proj_dim!r}')
        if self.init == 'cls' and self.cls_init is None:
            raise ValueError("prompt_cfg.init='cls' needs cls_init: a (C, d) "
                             'tensor of class-mean [CLS] embeddings or a path '
                             'to one')
        if self.init != 'cls' and self.cls_init is not None:
            raise ValueError("prompt_cfg.cls_init is only used with init='cls'"
                             f', but init={self.init!r}')
        if self.layers is not None:
            if (not isinstance(self.layers, Sequence) or len(self.layers) != 2
                    or not all(
                        isinstance(i, int) and not isinstance(i, bool)
                        for i in self.layers)):
                raise ValueError('prompt_cfg.layers must be a pair of 1-based '
                                 f'layer numbers (start, end), got '
                                 f'{self.layers!r}')
            self.layers = (int(self.layers[0]), int(self.layers[1]))
        if self.location == 'prefix' and (self.proj_dim is not None
                                          or self.init == 'cls'):
            raise ValueError("prompt location 'prefix' learns keys and "
                             'values directly; proj_dim and init=\'cls\' '
                             'do not apply to it')
        if self.location in PIXEL_LOCATIONS:
            if self.share is not None or self.proj_dim is not None:
                raise ValueError(
                    f'prompt location {self.location!r} is a pixel-space '
                    'prompt; share and proj_dim do not apply to it')
            if self.init == 'cls':
                raise ValueError(f"init='cls' does not apply to pixel-space "
                                 f'location {self.location!r}')

    def layer_ids(self, num_layers: int) -> list:
        """Return the sorted 0-based ids of the layers that get prompts.

        Args:
            num_layers (int): Number of layers of the backbone.

        Returns:
            list[int]: A contiguous range; the first entry is where the
            prompts enter the sequence.
        """
        if self.layers is None:
            start, end = (1, num_layers) if self.deep else (1, 1)
        else:
            start, end = sorted(self.layers)
        if start < 1 or end > num_layers:
            raise ValueError(
                f'prompt_cfg.layers {self.layers} is outside the model: '
                f'layers are numbered 1..{num_layers}')
        ids = list(range(start - 1, end))
        if self.location in PIXEL_LOCATIONS and ids != [0]:
            raise ValueError(
                f'prompt location {self.location!r} is an input (pixel-space)'
                ' prompt and exists only before layer 1 (VPT-Shallow); got '
                f'layers {start}..{end}. Use deep=False.')
        return ids


def load_cls_init(source: Union[str, torch.Tensor, Any]) -> torch.Tensor:
    """Load class-prototype prompt init from a tensor or a file.

    Args:
        source (str | torch.Tensor | numpy.ndarray): The embeddings or a path
            to a ``.pt``/``.pth`` (torch) or ``.npy`` (numpy) file.

    Returns:
        torch.Tensor: A float tensor.
    """
    if isinstance(source, str):
        if source.endswith('.npy'):
            import numpy as np
            tensor = torch.from_numpy(np.load(source))
        else:
            tensor = torch.load(source, map_location='cpu', weights_only=True)
    else:
        tensor = torch.as_tensor(source)
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f'cls_init {source!r} does not hold a tensor')
    return tensor.detach().float()
