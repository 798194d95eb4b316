"""What every prompted plain ViT shares: the sequence ``[prefix tokens,
prompts, patches]``, its layer loop over a :class:`PromptPlan`, which layers
run fused, and the readouts (``out_type``).

:class:`~vpt_mm.backbones.PromptedViT` (mmpretrain's ViT) and
:class:`~vpt_mm.backbones.PromptedTimmViT` (timm's) differ only in how they
embed an image and run one layer; the prompts' logic lives here once.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..prompts import VisualPrompt
from ..prompts.fused import KV, checkpointed
from ..prompts.plan import PromptPlan, TaskPrompts
from .frozen import FrozenBackboneMixin

#: The readouts of a prompted plain ViT.
OUT_TYPES = ('raw', 'cls_token', 'featmap', 'avg_featmap', 'avg_prompt',
             'avg_all')


class PromptedSequenceMixin(FrozenBackboneMixin):
    """The prompt logic of a plain ViT whose layers see
    ``[prefix tokens, prompts, patches]``.

    A class using it sets ``prompt`` (a :class:`VisualPrompt`),
    ``out_type``, ``out_indices`` (non-negative layer indices),
    ``num_layers``, ``num_extra_tokens`` (prefix tokens: class and register
    tokens), ``final_norm`` and ``with_cp``, and defines ``_blocks``,
    ``_check_fusable``, ``_token_layer``, ``_fused_layer``,
    ``_layer_prompt_kv`` and ``_embed_pixels`` (layers whose
    attention is ``layer.attn`` with ``num_heads``).
    """

    OUT_TYPES = set(OUT_TYPES)

    def _check_pooled_prompts(self) -> None:
        """Refuse prompt pools that have no prompts to pool."""
        if self.out_type not in ('avg_prompt', 'avg_all'):
            return
        if not self.prompt.has_prompt_tokens:
            raise ValueError(
                f'out_type {self.out_type!r} pools prompt tokens, but prompt '
                f'location {self.prompt.location!r} adds none')
        if min(self.out_indices) < self.prompt.layer_ids[0]:
            raise ValueError(
                f'out_type {self.out_type!r}: out_indices {self.out_indices} '
                'include layers before the prompts enter (layer '
                f'{self.prompt.layer_ids[0] + 1})')

    def fuse(self, enabled: bool = True) -> None:
        """Switch between the fused and the token form of the prompts.

        Both forms compute the same function with the same parameters, so
        the switch can be made at any time, in either direction, any number
        of times (calling it twice is the same as once).

        Args:
            enabled (bool): Fused form where exact (True) or the token form
                everywhere (False). Defaults to True.
        """
        fused = self._fused_layers(enabled)
        for i in fused:
            self._check_fusable(i)
        self.fuse_prompts = bool(enabled)
        self.fused_layers = fused

    def _fused_layers(self, enabled: bool) -> Tuple[int, ...]:
        """The layers that run fused with ``fuse_prompts=enabled``."""
        if self.prompt.location == 'prefix':
            # Learnt keys/values have no token form: always "fused".
            return tuple(self.prompt.layer_ids)
        return self._fusable_layers() if enabled else ()

    def _fusable_layers(self) -> Tuple[int, ...]:
        """Layers whose prompts are replaced at the input and whose prompt
        outputs are never read."""
        if not self.prompt.has_prompt_tokens:
            return ()
        ids = self.prompt.layer_ids
        reads_prompts = self.out_type in ('raw', 'avg_prompt', 'avg_all')
        fused = []
        for i in ids:
            flows_on = i == ids[-1] and i < self.num_layers - 1
            if flows_on or (reads_prompts and i in self.out_indices):
                continue
            fused.append(i)
        return tuple(fused)

    def task_prompts(self, fuse: Optional[bool] = None) -> TaskPrompts:
        """This model's prompts as one task of a :class:`PromptPlan`.

        Args:
            fuse (bool, optional): Fused form where exact (True) or the
                token form (False); by default as :meth:`fuse` set it.
        """
        return TaskPrompts({i: (self.prompt, i)
                            for i in self.prompt.layer_ids},
                           self._fused_for(fuse), self.prompt.num_tokens)

    def _prompt_kv(self, i: int, x: torch.Tensor
                   ) -> Callable[[VisualPrompt, int, int], KV]:
        """How layer ``i`` makes one prompt module's keys/values (learnt,
        for VPT-prefix), computed at every forward: once for the batch, or
        per sample under per-sample prompt dropout."""
        layer = self._blocks()[i]

        def kv_of(prompt: VisualPrompt, local: int, batch_size: int) -> KV:
            if prompt.location == 'prefix':
                k, v = prompt.prefix_kv(local, layer.attn.num_heads,
                                        batch_size)
                return k.to(x.dtype), v.to(x.dtype)
            prompts = prompt.layer_prompts(local, batch_size,
                                           self._embed_pixels)
            return self._layer_prompt_kv(layer, prompts.to(x.dtype))

        return kv_of

    def _run_layers(self, x: torch.Tensor, plan: PromptPlan,
                    hw: Sequence[int], norm: nn.Module,
                    *extra) -> Tuple[torch.Tensor, ...]:
        """Run every layer on ``x`` ([prefix tokens, patches], embedded),
        with each sample's prompts as ``plan`` says.

        Args:
            x (torch.Tensor): (B, n + H * W, d).
            plan (PromptPlan): The batch's prompts.
            hw (Sequence[int]): The patch grid (H, W).
            norm (nn.Module): The final norm (``final_norm``).
            *extra: Passed on to ``_token_layer`` and
                ``_fused_layer`` (e.g. timm's rotary embedding).

        Returns:
            tuple[torch.Tensor]: One output per ``out_indices`` layer.
        """
        outs = []
        n = self.num_extra_tokens
        B = x.shape[0]
        last = self.num_layers - 1
        for i in range(self.num_layers):
            if plan.is_fused(i):
                x = plan.strip(x, n, hw)
                kv, keep = plan.kv(i, self._prompt_kv(i, x), B)
                if keep is not None:  # padding: prompts first, then x
                    keep = F.pad(keep, (0, x.shape[1]), value=True)
                x = checkpointed(self.with_cp, self._fused_layer, i, x, kv,
                                 keep, *extra)
            else:
                x = plan.insert(x, i, n, hw=hw, embed=self._embed_pixels)
                keep = plan.key_mask()
                if keep is not None:
                    # [extra tokens, prompts, patches]: only prompts masked
                    keep = F.pad(keep, (n, x.shape[1] - n - keep.shape[1]),
                                 value=True)
                x = checkpointed(self.with_cp, self._token_layer, i, x, keep,
                                 *extra)
            if i == last and self.final_norm:
                x = norm(x)
            if i in self.out_indices:
                outs.append(self._format_output(x, hw, plan))
        return tuple(outs)

    def _format_output(self, x: torch.Tensor, hw: Sequence[int],
                       plan: PromptPlan) -> torch.Tensor:
        """One ``out_indices`` output of the layer output ``x``."""
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        n = self.num_extra_tokens
        _, prompts, patches = self.prompt.split(x, n, hw[0] * hw[1])
        if self.out_type == 'featmap':
            B = x.size(0)
            return patches.reshape(B, *hw, -1).permute(0, 3, 1, 2)
        if self.out_type == 'avg_featmap':
            return patches.mean(dim=1)
        if self.out_type == 'avg_prompt':
            return plan.mean(prompts)
        # 'avg_all'
        if plan.key_mask() is None:
            return x[:, n:].mean(dim=1)
        return plan.mean(prompts, patches)
