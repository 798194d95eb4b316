"""The frozen-backbone contract shared by every prompted backbone."""
from __future__ import annotations

from ..checkpoints import load_pretrained_backbone
from ..prompts import PromptModule, prompt_parameter_names


class FrozenBackboneMixin:
    """Freeze everything but the prompts, and keep it in eval mode.

    Mixed into a prompted subclass of an mmpretrain backbone, in front of it.
    Prompts are recognised as :class:`~vpt_mm.prompts.PromptModule` modules,
    wherever they sit (e.g. one per stage in a ``ModuleDict``).

    - :meth:`init_frozen_backbone` sets ``requires_grad=False`` on every
      parameter outside the prompt modules (once; protocols that train
      more, e.g. VPT + Bias, may switch parameters back on afterwards).
    - :meth:`train` puts every module but the prompts back in eval mode,
      so ``model.train()`` never re-enables the backbone's dropout,
      drop-path or normalisation statistics.
    - :meth:`init_weights` loads ``init_cfg=dict(type='Pretrained', ...)``
      strictly: only prompt keys may be missing.
    """

    freeze_backbone = False

    def init_frozen_backbone(self, freeze: bool = True) -> None:
        """Freeze every non-prompt parameter if ``freeze``."""
        self.freeze_backbone = freeze
        if freeze:
            prompt_keys = prompt_parameter_names(self)
            for name, param in self.named_parameters():
                if name not in prompt_keys:
                    param.requires_grad = False
        self.train(self.training)

    def train(self, mode: bool = True):
        """Set train mode on the prompts only when the backbone is frozen."""
        super().train(mode)
        if self.freeze_backbone:
            for module in self.modules():
                if module is not self:
                    module.training = False
            for module in self.modules():
                if isinstance(module, PromptModule):
                    module.train(mode)
        return self

    def init_weights(self) -> None:
        """Load a pretrained backbone strictly, or initialise as upstream."""
        init_cfg = self.init_cfg
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            load_pretrained_backbone(
                self, init_cfg['checkpoint'], prefix=init_cfg.get('prefix'))
            self._is_init = True
            return
        super().init_weights()
