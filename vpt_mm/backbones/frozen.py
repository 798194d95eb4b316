"""The frozen-backbone contract shared by every prompted backbone."""
from __future__ import annotations

from typing import ClassVar, Dict, FrozenSet, Optional, Sequence, Tuple

import torch.nn as nn
from mmpretrain.models.backbones import VisionTransformer
from torch.nn.modules.module import register_module_module_registration_hook

from ..checkpoints import guard_loads, is_guarded, load_configured_pretrained
from ..freeze import set_frozen_modes, set_trainable
from ..prompts.plan import PromptPlan
from ..registry import register_model
from ..validation import require_bool, require_str_list


def _guard_parent(parent: nn.Module, name: str, child: object) -> None:
    """Module registration hook: a model given a module that checks the
    vpt_mm files loaded into it (a vpt_mm backbone, or a model holding one)
    checks them too, whole (:func:`~vpt_mm.checkpoints.guard_loads`). Acts
    on no other module."""
    if isinstance(child, nn.Module) and is_guarded(child):
        guard_loads(parent)


class FrozenBackboneMixin:
    """Freeze everything but the prompts, and keep it in eval mode.

    Mixed into a prompted subclass of an mmpretrain backbone, in front of it.
    Prompts are recognised as :class:`~vpt_mm.prompts.PromptModule` modules,
    wherever they sit (e.g. one per stage in a ``ModuleDict``).

    - :meth:`init_frozen_backbone` sets ``requires_grad=False`` on every
      parameter outside the prompt modules (once; protocols that train
      more, e.g. VPT + Bias, may switch parameters back on afterwards).
    - :meth:`train` keeps the frozen parts in eval mode
      (:func:`vpt_mm.freeze.set_frozen_modes`), so ``model.train()`` never
      re-enables a frozen layer's dropout, drop-path or normalisation
      statistics.
    - :meth:`init_weights` loads ``init_cfg=dict(type='Pretrained', ...)``
      strictly (:meth:`load_pretrained`): only prompt keys may be missing.
    - A vpt_mm file loaded by a generic mmengine loader (e.g. mmpretrain's
      ``ImageClassificationInferencer(cfg, pretrained=FILE)``) must fit
      exactly; a tuned-only file first gets the pretrained backbone it was
      trained on (:func:`~vpt_mm.checkpoints.guard_loads`). The model that
      holds the backbone (a classifier, a segmentor) checks that such a file
      fits it whole, head included (``_guard_parent``).
    """

    freeze_backbone = False
    #: What the unprompted form reads where this class pools (for ViTs their
    #: own [CLS] feature; mmpretrain's image pool adds an untrained norm).
    UNPROMPTED_POOLS: ClassVar[Dict[str, str]] = {
        'avg_prompt': 'cls_token', 'avg_all': 'cls_token',
        'avg_featmap': 'cls_token'}
    #: The mmpretrain backbone this class prompts (its unprompted form).
    UPSTREAM: ClassVar[type]
    #: Constructor arguments this class adds to ``UPSTREAM``'s.
    OWN_ARGS: ClassVar[Tuple[str, ...]] = ('prompt_cfg', 'freeze_backbone',
                                           'trainable')

    @classmethod
    def unprompted_cfg(cls, cfg: dict) -> dict:
        """The config of the same backbone without prompts (or freezing):
        ``UPSTREAM`` with every argument of ``cfg`` but this class's
        own (:attr:`OWN_ARGS`), ``init_cfg`` included.

        The one way to build "this model without prompts": the cost
        benchmark's Full and Linear rows, the class prototypes of
        ``init='cls'``, the parameter table's baselines.

        Args:
            cfg (dict): A config of this class (its ``type`` is replaced).

        Returns:
            dict: A config of ``UPSTREAM``, in mmpretrain's scope.

        Examples:
            >>> from vpt_mm.backbones import PromptedViT
            >>> PromptedViT.unprompted_cfg(dict(
            ...     type='PromptedViT', arch='b', fuse_prompts=False,
            ...     prompt_cfg=dict(num_tokens=5)))
            {'type': 'mmpretrain.VisionTransformer', 'arch': 'b'}
        """
        out = {k: v for k, v in cfg.items()
               if k not in cls.OWN_ARGS and k != 'type'}
        return dict(type=f'mmpretrain.{cls.UPSTREAM.__name__}', **out)

    def init_frozen_backbone(self,
                             freeze: bool = True,
                             trainable: Sequence[str] = ()) -> None:
        r"""Freeze every non-prompt parameter if ``freeze``.

        Args:
            freeze (bool): Freeze the backbone. Defaults to True.
            trainable (Sequence[str]): Regular expressions (``re.search``)
                of backbone parameter names that stay trainable in a frozen
                backbone, e.g. ``[r'(^|\.)bias$']`` for the Bias protocol.
                A pattern that matches nothing is an error.
        """
        self.freeze_backbone = require_bool('freeze_backbone', freeze)
        self.trainable = require_str_list('trainable', trainable)
        if self.trainable and not freeze:
            raise ValueError('trainable patterns select what stays trainable '
                             'in a frozen backbone; with freeze_backbone='
                             'False everything trains already')
        if freeze:
            set_trainable(self, self.trainable)
        self.train(self.training)
        guard_loads(self, self.load_pretrained)

    def _fused_for(self, fuse: Optional[bool]) -> FrozenSet[int]:
        """The layers that run fused with ``fuse_prompts=fuse``; by default
        as :meth:`fuse` set them (prompted backbones with a fused form)."""
        if fuse is None:
            return frozenset(self.fused_layers)
        return frozenset(self._fused_layers(fuse))

    def prompt_plan(self, plan: Optional[PromptPlan] = None) -> PromptPlan:
        """``plan``, or this model's own: the plan of its one task
        (``task_prompts()``), what a forward without a plan runs."""
        return plan or PromptPlan.single(self.task_prompts())

    def train(self, mode: bool = True):
        """Train mode, with the frozen parts in eval mode
        (:func:`vpt_mm.freeze.set_frozen_modes`)."""
        super().train(mode)
        set_frozen_modes(self)
        return self

    def checkpoint_layout(self, state: dict) -> dict:
        """This backbone's state dict (without prompts) in the layout of its
        pretrained checkpoints, what ``init_cfg`` loads: the same keys here
        (timm's layout for :class:`~vpt_mm.backbones.PromptedTimmViT`)."""
        return state

    def from_checkpoint_layout(self, state: dict) -> dict:
        """A pretrained checkpoint's tensors under this backbone's keys (the
        inverse of :meth:`checkpoint_layout`): the same keys here."""
        return state

    def unused_pretrained_keys(self, keys: Sequence[str]) -> list:
        """The checkpoint keys among ``keys`` of layers this configuration
        leaves out: a ViT's final norm (``ln1.``) with ``final_norm=False``.
        Strict loading skips them (and logs them) instead of failing."""
        if getattr(self, 'final_norm', True) is False:
            return [k for k in keys if k.startswith('ln1.')]
        return []

    def fresh_pretrained_keys(self, missing: Sequence[str]) -> list:
        """The keys among ``missing`` that a pretrained checkpoint may lack:
        the output norms of stages (``norm{i}``, weight and bias, each norm
        missing whole) that a classification checkpoint holds none for,
        which mmseg's recipes add for their ``out_indices`` and start from
        LayerNorm's initialisation (weight 1, bias 0), as mmseg's own Swin
        and ConvNeXt loading leaves them. Strict loading logs them."""
        import re
        norms = {}
        for key in missing:
            match = re.fullmatch(r'(norm\d+)\.(weight|bias)', key)
            if match:
                norms.setdefault(match.group(1), set()).add(match.group(2))
        return [k for k in missing if k.split('.')[0] in norms
                and norms[k.split('.')[0]] == {'weight', 'bias'}]

    def load_pretrained(self) -> bool:
        """Load ``init_cfg=dict(type='Pretrained', ...)`` strictly, in the
        layout of :meth:`from_checkpoint_layout`
        (:func:`~vpt_mm.checkpoints.load_configured_pretrained`).

        Returns:
            bool: False if ``init_cfg`` names no pretrained checkpoint.
        """
        return load_configured_pretrained(self)

    def init_weights(self) -> None:
        """Load a pretrained backbone strictly, or initialise as upstream."""
        if not self.load_pretrained():
            super().init_weights()


def unprompted_model_cfg(model_cfg: dict) -> dict:
    """A classifier config with its prompted backbone replaced by the same
    backbone without prompts (:meth:`FrozenBackboneMixin.unprompted_cfg`),
    reading the unprompted backbone's own feature where the prompted one
    pools: a ViT's [CLS] (a timm ViT's image pool for prompt pools,
    ``UNPROMPTED_POOLS``), a Swin's feature map through a
    ``GlobalAveragePooling`` neck.

    Args:
        model_cfg (dict): A ``model`` config with a prompted backbone.

    Returns:
        dict: A copy, with the baseline's backbone (and neck).
    """
    import copy

    from ..registry import PRETRAIN_MODELS
    cfg = copy.deepcopy(dict(model_cfg))
    backbone = dict(cfg['backbone'])
    cls = PRETRAIN_MODELS.get(backbone['type'])
    out_type = backbone.get('out_type')
    if out_type in ('avg_prompt', 'avg_all', 'avg_featmap'):
        if 'out_type' in cls.OWN_ARGS:  # Swin: pool its feature map
            cfg['neck'] = dict(type='GlobalAveragePooling')
        else:  # ViT: its own feature
            backbone['out_type'] = cls.UNPROMPTED_POOLS.get(out_type,
                                                            out_type)
    cfg['backbone'] = cls.unprompted_cfg(backbone)
    return cfg


@register_model()
class FrozenViT(FrozenBackboneMixin, VisionTransformer):
    r"""mmpretrain's VisionTransformer, frozen, without prompts.

    The backbone of the head-only baseline (nothing in it trains) and, with
    ``trainable``, of protocols that tune a chosen subset of its parameters,
    e.g. ``trainable=[r'(^|\.)bias$']`` for Bias (BitFit). Every module
    stays in eval mode; pretrained weights load strictly.

    Args:
        trainable (Sequence[str]): See
            :meth:`FrozenBackboneMixin.init_frozen_backbone`.
        **kwargs: Arguments of mmpretrain's ``VisionTransformer``.
    """

    UPSTREAM = VisionTransformer
    OWN_ARGS = ('trainable', )

    def __init__(self, trainable: Sequence[str] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.init_frozen_backbone(True, trainable)


register_module_module_registration_hook(_guard_parent)
