"""One frozen backbone, many tasks in one batch.

Every task of the paper's setting is the same frozen backbone plus its own
prompts and head. :class:`MultiTaskClassifier` keeps one backbone and the
prompt modules and heads of any number of tasks (different prompt lengths,
depths and class counts), and classifies a batch whose samples belong to
different tasks in one forward of that backbone: it makes the batch's
:class:`~vpt_mm.prompts.plan.PromptPlan` (each sample's prompts, padded to
the longest set and masked) and calls the backbone's own forward with it,
then each sample's features go through its task's neck and head. ConvNet
frames widen the input, so tasks whose frames differ in width run one
backbone pass per width.

Tasks whose tuned tensors change the backbone itself (Bias, VPT+Bias,
Partial, Adapter, Full) cannot share it and are refused; so are prompt
locations other than ``'prepend'``, and options that differ between the
tasks where they decide what the head reads (``out_type``,
``out_indices``, ...: one forward runs one of them).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..backbones import (
    PromptedConvNeXt,
    PromptedResNet,
    PromptedSwin,
)
from ..backbones.sequence import PromptedSequenceMixin
from ..checkpoints import frozen_fingerprint, readout_of, tuned_state_dict
from ..prompts.fused import masked_layer_forward
from ..prompts.plan import PromptPlan

__all__ = ['MultiTaskClassifier', 'masked_layer_forward', 'sharing_problem']


#: Prompted backbones whose tasks can share a batch.
SHARED_BACKBONES = (PromptedSequenceMixin, PromptedSwin, PromptedConvNeXt,
                    PromptedResNet)


def sharing_problem(model: nn.Module) -> Optional[str]:
    """Why a task's model cannot share a batch with other tasks on one
    backbone (:class:`MultiTaskClassifier`), or None if it can.

    Args:
        model (nn.Module): A single-task ``ImageClassifier``.
    """
    backbone = model.backbone
    if not isinstance(backbone, SHARED_BACKBONES):
        return ('multi-task batches need a PromptedViT, PromptedTimmViT, '
                'PromptedSwin, PromptedConvNeXt or PromptedResNet backbone, '
                'got '
                f'{type(backbone).__name__}')
    is_vit = isinstance(backbone, PromptedSequenceMixin)
    if is_vit and backbone.out_type == 'raw':
        return ("out_type 'raw'; in a multi-task batch each sample's "
                'sequence holds room for the longest prompt set, so it is '
                "not its own model's sequence")
    changed = [k for k in tuned_state_dict(backbone)
               if not k.startswith('prompt.')]
    if changed:
        return (f'it tunes backbone tensors ({changed[:3]}'
                f'{"..." if len(changed) > 3 else ""}): its backbone is not '
                'the shared frozen one, so it cannot share a batch (serve '
                'Bias, VPT+Bias, Partial, Adapter and Full tasks with a model '
                'of their own)')
    location = (backbone.prompt.location if is_vit else getattr(
        backbone, 'prompt_location', 'prepend'))
    if location != 'prepend':
        return (f'prompt location {location!r}; multi-task batches take '
                "'prepend' prompts")
    return None


class MultiTaskClassifier(nn.Module):
    """A frozen prompted ViT, Swin or ConvNet shared by several tasks'
    prompts and heads.

    Args:
        models (dict): Task name -> a single-task mmpretrain
            ``ImageClassifier`` with a ``PromptedViT``, ``PromptedSwin``,
            ``PromptedConvNeXt`` or ``PromptedResNet`` backbone, loaded and
            verified (e.g. by :func:`~vpt_mm.apis.load_task_model`). Their
            frozen backbones must be the same (equal fingerprints); the first
            one is kept, the others' backbones are dropped.

    Raises:
        ValueError: For a task that tunes more than prompts and head, a
            prompt location other than ``'prepend'``, a backbone other than
            the first task's, or an unsupported backbone or output type.
    """

    def __init__(self, models: Dict[str, nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError('MultiTaskClassifier needs at least one task')
        names = list(models)
        first = models[names[0]]
        fingerprint = frozen_fingerprint(first)
        for name, model in models.items():
            problem = sharing_problem(model)
            if problem:
                raise ValueError(f'Task {name!r}: {problem}')
            if type(model.backbone) is not type(first.backbone):
                raise ValueError(
                    f'Task {name!r} has a {type(model.backbone).__name__} '
                    f'backbone, task {names[0]!r} a '
                    f'{type(first.backbone).__name__}: tasks share a batch '
                    'only on one backbone')
            # Each task keeps its own neck; the backbone is shared.
            mine, theirs = (readout_of(m.backbone) for m in (model, first))
            for key in sorted(set(mine) | set(theirs)):
                if mine.get(key) != theirs.get(key):
                    raise ValueError(
                        f'Task {name!r} has {key}={mine.get(key)!r}, task '
                        f'{names[0]!r} {key}={theirs.get(key)!r}: one batch '
                        'runs one of them, so these tasks need batches of '
                        'their own')
            if frozen_fingerprint(model) != fingerprint:
                raise ValueError(
                    f'Task {name!r} was loaded on another frozen backbone '
                    f'than {names[0]!r} (fingerprints differ): tasks share a '
                    'batch only on the same backbone')
        self.backbone = first.backbone
        self.data_preprocessor = first.data_preprocessor
        self.task_names: List[str] = names
        self.prompts = nn.ModuleList(models[n].backbone.prompt
                                     for n in names)
        self.necks = nn.ModuleList(
            models[n].neck if getattr(models[n], 'neck', None) is not None
            else nn.Identity() for n in names)
        self.heads = nn.ModuleList(models[n].head for n in names)
        self.is_vit = isinstance(self.backbone, PromptedSequenceMixin)
        self.is_swin = isinstance(self.backbone, PromptedSwin)
        # Each task's prompts on the shared backbone, by layer. A batch
        # runs the fused form wherever it is exact for every task present,
        # whatever each model's fuse_prompts (both forms are one function).
        self._task_prompts = [models[n].backbone.task_prompts(fuse=True)
                              for n in names]
        self.eval()

    def task_index(self, name: str) -> int:
        """The index of a task, as :meth:`forward` takes it."""
        if name not in self.task_names:
            raise KeyError(f'Unknown task {name!r}; loaded: '
                           f'{self.task_names}')
        return self.task_names.index(name)

    def plan(self, tasks: torch.Tensor) -> PromptPlan:
        """The prompt plan of a batch whose samples belong to ``tasks``."""
        return PromptPlan(self._task_prompts, tasks)

    @torch.no_grad()
    def extract_feat(self, inputs: torch.Tensor,
                     tasks: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Backbone features of a mixed batch: the backbone's own
        ``out_indices`` outputs, each sample's with its own task's prompts.

        Args:
            inputs (torch.Tensor): (B, C, H, W) preprocessed images.
            tasks (torch.Tensor): (B,) task index of each sample.

        Returns:
            tuple[torch.Tensor]: The backbone's outputs.

        Raises:
            ValueError: For ConvNet tasks whose frames differ in width
                (:meth:`forward` runs one batch per width).
        """
        return self.backbone(inputs, self.plan(tasks))

    def _logits(self, inputs: torch.Tensor, tasks: torch.Tensor,
                present: List[int]) -> Dict[int, torch.Tensor]:
        """Per task, the logits of its samples. ConvNet frames widen the
        input, so tasks with frames of one width share a backbone pass;
        token prompts share one pass for the whole batch."""
        groups: Dict[int, List[int]] = {}
        for t in present:
            width = self._task_prompts[t].num_tokens if not (
                self.is_vit or self.is_swin) else 0
            groups.setdefault(width, []).append(t)
        logits = {}
        for group in groups.values():
            rows = torch.isin(tasks, torch.as_tensor(group,
                                                     device=tasks.device))
            feats = self.extract_feat(inputs[rows], tasks[rows])
            for t in group:
                mine = tasks[rows] == t
                logits[t] = self.heads[t](self.necks[t](tuple(
                    f[mine] for f in feats)))
        return logits

    @torch.no_grad()
    def forward(self, inputs: torch.Tensor,
                tasks: Sequence[int]) -> List[torch.Tensor]:
        """Class probabilities of a mixed batch.

        Args:
            inputs (torch.Tensor): (B, C, H, W) preprocessed images.
            tasks (Sequence[int]): Task index of each sample
                (:meth:`task_index`).

        Returns:
            list[torch.Tensor]: Per sample, the (num_classes,) softmax
            scores of its task's head.
        """
        tasks = torch.as_tensor(list(tasks), device=inputs.device)
        if tasks.shape != (inputs.shape[0], ):
            raise ValueError(f'{inputs.shape[0]} images but '
                             f'{tasks.numel()} task indices')
        if len(tasks) and (tasks.min() < 0
                           or tasks.max() >= len(self.task_names)):
            raise ValueError(f'task indices must be in 0..'
                             f'{len(self.task_names) - 1}')
        present = sorted(set(tasks.tolist()))
        logits_of = self._logits(inputs, tasks, present)
        scores: List[Optional[torch.Tensor]] = [None] * len(tasks)
        for t in present:
            idx = (tasks == t).nonzero().flatten()
            logits = logits_of[t]
            for j, row in zip(idx.tolist(), logits.softmax(-1)):
                scores[j] = row
        return scores
