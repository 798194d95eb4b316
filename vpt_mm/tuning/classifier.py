"""TunedClassifier: an mmpretrain ImageClassifier with a tuning protocol."""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.structures import DataSample

from ..checkpoints import (
    frozen_fingerprint,
    guard_loads,
    is_guarded,
    load_configured_pretrained,
)
from ..freeze import set_frozen_modes, set_trainable
from ..registry import PRETRAIN_MODELS
from .modules import MlpClsHead, SideNetwork, add_adapters
from .protocols import (
    Protocol,
    backbone_patterns,
    transformer_blocks,
)


@PRETRAIN_MODELS.register_module()
class TunedClassifier(ImageClassifier):
    """An ``ImageClassifier`` that trains what a protocol says.

    ``tuning=dict(type=...)`` picks one of the paper's protocols (see
    :mod:`vpt_mm.tuning.protocols`); everything else is mmpretrain's
    ``ImageClassifier``. The head, the neck and any added module always
    train; which backbone parameters train is decided by
    :func:`~vpt_mm.tuning.protocols.backbone_patterns`. After ``train()``
    the frozen parts are back in eval mode.

    ``cache_features=True`` (Linear and Mlp): the frozen backbone's (and
    neck's) features of every training sample are computed once, keyed by
    the sample's dataset index, and reused in every later epoch, so training
    runs the head only. The training pipeline must be deterministic
    (``tools/train.py`` checks it); evaluation is never cached.

    Args:
        tuning (dict): E.g. ``dict(type='Adapter', reduction=64)``,
            ``dict(type='Partial', k=2)``, ``dict(type='Mlp',
            num_layers=3)``. Defaults to ``dict(type='VPT')``.
        **kwargs: Arguments of mmpretrain's ``ImageClassifier``.
    """

    def __init__(self, tuning: Optional[dict] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.protocol = Protocol.from_dict(tuning)
        patterns = backbone_patterns(self.protocol, self.backbone)
        self.side: Optional[SideNetwork] = None
        if self.protocol.type == 'Adapter':
            add_adapters(transformer_blocks(self.backbone),
                         self.protocol.reduction)
        if self.protocol.type == 'Mlp':
            head = self.head
            self.head = MlpClsHead(
                num_classes=head.num_classes,
                in_channels=head.in_channels,
                num_layers=self.protocol.num_layers,
                loss=head.loss_module,
                topk=head.topk,
                cal_acc=head.cal_acc)
        if self.protocol.type == 'Sidetune':
            self.side = SideNetwork(self.head.in_channels)
        set_trainable(self.backbone, patterns)
        self._feature_cache: Dict[int, torch.Tensor] = {}
        #: Fingerprint of the frozen backbone the cached features came from.
        self._cache_fingerprint: Optional[str] = None
        if not is_guarded(self.backbone):
            # vpt_mm's backbones guard themselves; a plain one's pretrained
            # checkpoint is this classifier's to load.
            guard_loads(self.backbone, self.load_pretrained)
        # A vpt_mm file read by a generic mmengine loader (e.g. mmpretrain's
        # inferencer) must fit the whole model.
        guard_loads(self)
        self._register_load_state_dict_pre_hook(self._drop_feature_cache)

    def _drop_feature_cache(self, *args) -> None:
        self._feature_cache.clear()  # the backbone may change

    def _plain_pretrained(self) -> Optional[dict]:
        """The ``Pretrained`` init_cfg of a backbone that is not one of
        vpt_mm's (which load strictly themselves: ``load_pretrained``), else
        None."""
        init_cfg = getattr(self.backbone, 'init_cfg', None)
        if (isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'
                and not callable(getattr(self.backbone, 'load_pretrained',
                                         None))):
            return init_cfg
        return None

    def load_pretrained(self) -> bool:
        """Load a plain mmpretrain backbone's ``Pretrained`` checkpoint
        strictly (vpt_mm's backbones load their own).

        Returns:
            bool: False if there is no such checkpoint to load.
        """
        if self._plain_pretrained() is None:
            return False
        return load_configured_pretrained(self.backbone)

    def init_weights(self) -> None:
        """mmpretrain's, except that a plain mmpretrain backbone's
        ``Pretrained`` checkpoint is loaded strictly (every key present,
        none extra, same shapes) instead of mmengine's non-strict way."""
        init_cfg = self._plain_pretrained()
        if init_cfg is None:
            return super().init_weights()
        self.backbone.init_cfg = None
        try:
            super().init_weights()
        finally:
            self.backbone.init_cfg = init_cfg
        self.load_pretrained()

    def train(self, mode: bool = True) -> 'TunedClassifier':
        """Train mode, with the frozen parts in eval mode."""
        super().train(mode)
        if mode:
            set_frozen_modes(self.backbone)
            self._check_feature_cache()
        return self

    def _check_feature_cache(self) -> None:
        """Drop cached features if the frozen backbone changed since they
        were computed, however it changed (mmengine's loops call
        ``train()`` at every epoch; loading a state dict drops them too)."""
        if not self._feature_cache:
            return
        if frozen_fingerprint(self) != self._cache_fingerprint:
            self._feature_cache.clear()

    def extract_feat(self, inputs: torch.Tensor, stage: str = 'neck'):
        """mmpretrain's features, blended with the side network's for
        Sidetune."""
        feats = super().extract_feat(inputs, stage)
        if self.side is None or stage != 'neck':
            return feats
        return feats[:-1] + (self.side.blend(inputs, feats[-1]), )

    def loss(self, inputs: torch.Tensor,
             data_samples: List[DataSample]) -> dict:
        """Loss, on cached features when ``cache_features`` is on."""
        if not self.protocol.cache_features:
            return super().loss(inputs, data_samples)
        return self.head.loss(self._cached_feat(inputs, data_samples),
                              data_samples)

    def _cached_feat(self, inputs: torch.Tensor,
                     data_samples: List[DataSample]) -> tuple:
        keys = [int(s.sample_idx) for s in data_samples]
        if not self._feature_cache:
            self._cache_fingerprint = frozen_fingerprint(self)
        if not all(k in self._feature_cache for k in keys):
            with torch.no_grad():
                feats = self.extract_feat(inputs)
            if len(feats) != 1:
                raise ValueError('cache_features needs one feature map from '
                                 'the neck')
            for key, feat in zip(keys, feats[0]):
                self._feature_cache[key] = feat.detach()
        return (torch.stack([self._feature_cache[k] for k in keys]), )
