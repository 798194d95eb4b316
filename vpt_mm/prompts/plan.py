"""Prompt plans: which prompts each sample of a batch carries, layer by layer.

A prompted backbone has one forward. It asks a :class:`PromptPlan` what to
do at each layer: which prompts enter there (:meth:`PromptPlan.insert`,
:meth:`PromptPlan.replace`), whether the layer runs fused and with which
prompt keys/values (:meth:`PromptPlan.is_fused`, :meth:`PromptPlan.kv`), which
prompt positions a sample attends to (:meth:`PromptPlan.key_mask`) and how
prompts are pooled (:meth:`PromptPlan.mean`).

A single-task model is a plan of one task (:meth:`PromptPlan.single`): every
call goes to that task's prompt module, unchanged. A batch whose samples
belong to several tasks (:class:`~vpt_mm.apis.MultiTaskClassifier`) is a
plan of several tasks: each sample's prompts are padded to the longest set
present, the padding is masked out of every attention, and a layer runs
fused only where every task present fuses it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

import torch

from .base import PromptModule
from .fused import KV
from .prompt import VisualPrompt

#: A prompted layer's prompt module and the layer's index in that module.
Entry = Tuple[PromptModule, int]


@dataclass(frozen=True)
class TaskPrompts:
    """One task's prompts on a backbone.

    Attributes:
        layers (dict): Backbone layer index (ViT layer, Swin block over all
            stages, 0 for a ConvNet's input frame) -> the prompt module that
            feeds it and the layer's index in that module.
        fused (frozenset): The layers the task runs in the fused form.
        num_tokens (int): The prompt length p.
    """

    layers: Dict[int, Entry]
    fused: FrozenSet[int] = field(default_factory=frozenset)
    num_tokens: int = 0


class PromptPlan:
    """The prompts of one batch, for one forward of a prompted backbone.

    A plan holds state (which prompt positions of each sample are filled) and
    is made for one forward; backbones make their own when called without
    one.

    Args:
        tasks (Sequence[TaskPrompts]): Every task the plan may serve.
        task_of (torch.Tensor, optional): (B,) task index of each sample;
            None for one task (no padding, no masks: the single-task
            model's own computation).

    Examples:
        >>> from vpt_mm.prompts import VisualPrompt
        >>> prompt = VisualPrompt(dict(num_tokens=3, deep=True), 8, 2, 4,
        ...                       (2, 2))
        >>> task = TaskPrompts({i: (prompt, i) for i in prompt.layer_ids},
        ...                    num_tokens=3)
        >>> plan = PromptPlan([task, task], torch.tensor([0, 1, 1]))
        >>> plan.replace(0, None, torch.zeros(3, 4, 8)).shape
        torch.Size([3, 3, 8])
    """

    def __init__(self, tasks: Sequence[TaskPrompts],
                 task_of: Optional[torch.Tensor] = None) -> None:
        if task_of is None and len(tasks) != 1:
            raise ValueError(f'A plan of {len(tasks)} tasks needs the task '
                             'of each sample')
        self.tasks = list(tasks)
        self.task_of = task_of
        self.present: List[int] = ([0] if task_of is None else sorted(
            set(task_of.tolist())))
        self.width = max((self.tasks[t].num_tokens for t in self.present),
                         default=0)
        self.fused = frozenset.intersection(
            *(self.tasks[t].fused for t in self.present)) \
            if self.present else frozenset()
        # (B, width) bool: the prompt positions holding a sample's own
        # prompts, for a plan of several tasks once prompts have entered.
        self.valid: Optional[torch.Tensor] = None
        self._own: Optional[torch.Tensor] = None

    @classmethod
    def single(cls, task: TaskPrompts) -> 'PromptPlan':
        """The plan of a single-task model."""
        return cls([task])

    @classmethod
    def empty(cls) -> 'PromptPlan':
        """No prompts anywhere: the frozen backbone's own computation."""
        return cls([TaskPrompts({})])

    @property
    def mixed(self) -> bool:
        """Whether samples may carry prompts of different tasks."""
        return self.task_of is not None

    # ------------------------------------------------------------------
    # Which prompts enter where
    # ------------------------------------------------------------------
    def enters(self, layer: int) -> bool:
        """Whether any sample's prompts enter at ``layer``."""
        return any(layer in self.tasks[t].layers for t in self.present)

    def is_fused(self, layer: int) -> bool:
        """Whether ``layer`` runs in the fused form for this batch."""
        return layer in self.fused

    def _own_positions(self, device: torch.device) -> torch.Tensor:
        """(B, width) bool: the positions each sample's own prompts fill
        (made once per plan)."""
        if self._own is None:
            positions = torch.zeros(len(self.tasks), self.width,
                                    dtype=torch.bool, device=device)
            for t in self.present:
                positions[t, :self.tasks[t].num_tokens] = True
            self._own = positions[self.task_of]
        return self._own

    def replace(self, layer: int, prompts: Optional[torch.Tensor],
                like: torch.Tensor) -> Optional[torch.Tensor]:
        """The prompt tokens at the input of ``layer``.

        Samples whose task prompts this layer get its prompts (VPT-Deep
        replaces what the previous layer output); the others keep
        ``prompts``.

        Args:
            layer (int): Backbone layer index.
            prompts (torch.Tensor, optional): (B, width, d) prompt tokens
                carried from the previous layer, or None.
            like (torch.Tensor): (B, N, d) image tokens (batch size, dtype
                and device).

        Returns:
            torch.Tensor | None: (B, width, d) prompt tokens, or None if no
            sample carries any.
        """
        entering = [t for t in self.present if layer in self.tasks[t].layers]
        if not entering:
            return prompts
        B = like.shape[0]
        if not self.mixed:
            module, local = self.tasks[0].layers[layer]
            return module.layer_prompts(local, B).expand(B, -1,
                                                         -1).to(like.dtype)
        d = like.shape[-1]
        table = like.new_zeros(len(self.tasks), self.width, d)
        enters = torch.zeros(len(self.tasks), dtype=torch.bool,
                             device=like.device)
        for t in entering:
            module, local = self.tasks[t].layers[layer]
            table[t, :module.num_tokens] = module.layer_prompts(local, 1)[0]
            enters[t] = True
        rows = enters[self.task_of]
        new = table[self.task_of]
        if prompts is not None:
            new = torch.where(rows[:, None, None], new, prompts)
        filled = self._own_positions(like.device) & rows[:, None]
        self.valid = filled if self.valid is None else self.valid | filled
        return new

    def insert(self, x: torch.Tensor, layer: int, num_extra_tokens: int,
               hw: Sequence[int],
               embed: Optional[Callable] = None) -> torch.Tensor:
        """A sequence ``[extra tokens, prompts, patches]`` with the prompts
        entering at ``layer`` (the token form of a ViT layer).

        Args:
            x (torch.Tensor): (B, N, d) the layer's input.
            layer (int): Layer index.
            num_extra_tokens (int): Tokens in front of the prompts.
            hw (Sequence[int]): The patch grid.
            embed (Callable, optional): The patch embedding, for pixel
                prompts (``'prepend-pixel'``).

        Returns:
            torch.Tensor: The layer's input with its prompts.
        """
        if not self.mixed:
            entry = self.tasks[0].layers.get(layer)
            if entry is None:
                return x
            module, local = entry
            return module.insert(x, local, num_extra_tokens, hw=hw,
                                 embed=embed)
        if not self.enters(layer):
            return x
        extra, carried, patches = VisualPrompt.split(
            x, num_extra_tokens, int(hw[0]) * int(hw[1]))
        prompts = self.replace(layer, carried if carried.shape[1] else None,
                               patches)
        return torch.cat([extra, prompts, patches], dim=1)

    def strip(self, x: torch.Tensor, num_extra_tokens: int,
              hw: Sequence[int]) -> torch.Tensor:
        """Drop the prompt tokens of a sequence (those of a fused layer's
        input, replaced there and never read)."""
        self.valid = None
        extra, prompts, patches = VisualPrompt.split(
            x, num_extra_tokens, int(hw[0]) * int(hw[1]))
        return x if prompts.shape[1] == 0 else torch.cat([extra, patches],
                                                         dim=1)

    def drop(self) -> None:
        """Forget the carried prompts (fused layers, dropping merges)."""
        self.valid = None

    def key_mask(self) -> Optional[torch.Tensor]:
        """(B, width) bool: the prompt positions each sample attends to,
        or None where every sample attends to all of them (no mask: the
        faster attention kernels, the single-task computation)."""
        if self.valid is None or bool(self.valid.all()):
            return None
        return self.valid

    def kv(self, layer: int, kv_of: Callable[[PromptModule, int, int], KV],
           batch_size: int) -> Tuple[KV, Optional[torch.Tensor]]:
        """Prompt keys/values of a fused layer, and the prompt key mask.

        Args:
            layer (int): Layer index.
            kv_of (Callable): ``(module, local index, batch) -> (k, v)``,
                each (batch or 1, heads, p, head_dims): the backbone's own
                way to make one prompt module's keys/values at this layer.
            batch_size (int): B.

        Returns:
            tuple: ``((k, v), key_mask)``: K and V (1 or B, heads, width,
            head_dims), and (B, width) bool or None (see
            :meth:`key_mask`).
        """
        self.valid = None
        if not self.mixed:
            module, local = self.tasks[0].layers[layer]
            return kv_of(module, local, batch_size), None
        kvs = {t: kv_of(*self.tasks[t].layers[layer], 1)
               for t in self.present}
        if len(kvs) == 1:
            return next(iter(kvs.values())), None
        like = next(iter(kvs.values()))[0]
        _, heads, _, dh = like.shape
        k = like.new_zeros(len(self.tasks), heads, self.width, dh)
        v = like.new_zeros(len(self.tasks), heads, self.width, dh)
        for t, (pk, pv) in kvs.items():
            k[t, :, :pk.shape[2]] = pk[0]
            v[t, :, :pv.shape[2]] = pv[0]
        keep = self._own_positions(like.device)
        return (k[self.task_of], v[self.task_of]), \
            None if bool(keep.all()) else keep

    # ------------------------------------------------------------------
    # Outputs
    # ------------------------------------------------------------------
    def mean(self, prompts: torch.Tensor,
             tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The mean over each sample's own prompts (and ``tokens``).

        Args:
            prompts (torch.Tensor): (B, width, d).
            tokens (torch.Tensor, optional): (B, N, d) further tokens.

        Returns:
            torch.Tensor: (B, d).
        """
        keep = self.key_mask()
        if keep is None:
            seq = prompts if tokens is None else torch.cat([prompts, tokens],
                                                           dim=1)
            return seq.mean(dim=1)
        total = (prompts * keep[..., None]).sum(dim=1)
        count = keep.sum(dim=1, keepdim=True).to(prompts.dtype)
        if tokens is not None:
            total = total + tokens.sum(dim=1)
            count = count + tokens.shape[1]
        return total / count

    def frame(self, x: torch.Tensor) -> torch.Tensor:
        """Images framed by each sample's pixel prompt (ConvNets; the
        frame is the prompt of layer 0, the input).

        Raises:
            ValueError: If the samples' frames differ in width (they widen
                the input differently; run them in batches of their own).
        """
        if not self.mixed:
            entry = self.tasks[0].layers.get(0)
            return x if entry is None else entry[0](x)
        widths = {self.tasks[t].num_tokens for t in self.present}
        if len(widths) > 1:
            raise ValueError(f'Pixel frames of widths {sorted(widths)} in one '
                             'batch: each width needs a batch of its own')
        parts = {t: self.tasks[t].layers[0][0](x[self.task_of == t])
                 for t in self.present}
        like = next(iter(parts.values()))
        out = like.new_empty(x.shape[0], *like.shape[1:])
        for t, part in parts.items():
            out[self.task_of == t] = part
        return out
