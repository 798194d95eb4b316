"""One frozen backbone, many tasks in one batch.

Every task of the paper's setting is the same frozen backbone plus its own
prompts and head. :class:`MultiTaskClassifier` keeps one backbone in memory
and the prompt modules and heads of any number of tasks (different prompt
lengths, depths and class counts), and classifies a batch whose samples
belong to different tasks in one forward pass:

- every sample's sequence holds room for the longest prompt set of the
  batch; a sample's unused prompt positions are masked out of every
  attention (as keys), so each sample attends to exactly its own task's
  prompts, and the outputs equal those of its task's own model up to float
  rounding;
- a task's prompts enter at its own layers (VPT-Shallow, VPT-Deep, layer
  ranges) and flow on after its last prompted layer, as in
  :class:`~vpt_mm.backbones.PromptedViT`;
- where every task of the batch replaces its prompts at a layer and never
  reads their outputs (VPT-Deep), the layer runs in the fused form: the
  image tokens attend over the prompts' keys/values, gathered per sample,
  and no prompt query, projection or MLP is computed;
- each sample's features then go through its task's head.

For ``PromptedSwin`` each sample's prompts (padded to the longest set, the
padding masked as keys) join every window of that sample, flow through the
patch mergings (``prompt_merging='carry'``) or are dropped there, and enter
``avg_all`` pooling as that sample's own prompts; a block that every
task of the batch fuses (``PromptedSwin.fused_layers``) runs in the fused
form, with per-sample prompt keys/values. For the ConvNets
(``PromptedConvNeXt``, ``PromptedResNet``) each sample is framed by its own
task's pixel prompt; the frame widens the input, so tasks with frames of
one width share a backbone pass, one pass per width.

Tasks whose tuned tensors change the backbone itself (Bias, VPT+Bias,
Partial, Adapter, Full) cannot share it and are refused; so are prompt
locations other than ``'prepend'`` (pixel-space prompts change the image,
not the sequence).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.utils import resize_pos_embed

from ..backbones import (
    PromptedConvNeXt,
    PromptedResNet,
    PromptedSwin,
    PromptedViT,
)
from ..backbones.swin import (
    fused_swin_block,
    merge_prompts,
    prompted_swin_block,
    swin_prompt_kv,
)
from ..checkpoints import frozen_fingerprint, readout_of, tuned_state_dict
from ..prompts import VisualPrompt
from ..prompts.fused import KV, fused_layer_forward, prompt_kv

__all__ = ['MultiTaskClassifier', 'masked_layer_forward', 'sharing_problem']


def masked_layer_forward(layer: nn.Module, x: torch.Tensor,
                         keep: torch.Tensor) -> torch.Tensor:
    """An mmpretrain ``TransformerEncoderLayer`` whose attention ignores the
    keys at ``keep == False``.

    Args:
        layer (nn.Module): The layer (``ln1``, ``attn.qkv``, ``attn.proj``,
            ``ffn``, ``ln2``).
        x (torch.Tensor): (B, L, d) tokens.
        keep (torch.Tensor): (B, L) bool, the keys each sample attends to.

    Returns:
        torch.Tensor: (B, L, d).
    """
    attn = layer.attn
    B, L, C = x.shape
    qkv = attn.qkv(layer.ln1(x)).reshape(B, L, 3, attn.num_heads,
                                         attn.head_dims).permute(2, 0, 3, 1,
                                                                 4)
    out = F.scaled_dot_product_attention(
        qkv[0], qkv[1], qkv[2], attn_mask=keep[:, None, None, :])
    out = out.transpose(1, 2).reshape(B, L, attn.embed_dims)
    x = x + attn.out_drop(attn.gamma1(attn.proj_drop(attn.proj(out))))
    return layer.ffn(layer.ln2(x), identity=x)


def _fusable(prompt: VisualPrompt, num_layers: int) -> set:
    """Layers where ``prompt`` is replaced at the input and its outputs are
    never read (every prompted layer but the last, unless that is the
    network's last)."""
    ids = prompt.layer_ids
    return {i for i in ids if i != ids[-1] or i == num_layers - 1}


#: Prompted backbones whose tasks can share a batch.
SHARED_BACKBONES = (PromptedViT, PromptedSwin, PromptedConvNeXt,
                    PromptedResNet)


def sharing_problem(model: nn.Module) -> Optional[str]:
    """Why a task's model cannot share a batch with other tasks on one
    backbone (:class:`MultiTaskClassifier`), or None if it can.

    Args:
        model (nn.Module): A single-task ``ImageClassifier``.
    """
    backbone = model.backbone
    if not isinstance(backbone, SHARED_BACKBONES):
        return ('multi-task batches need a PromptedViT, PromptedSwin, '
                'PromptedConvNeXt or PromptedResNet backbone, got '
                f'{type(backbone).__name__}')
    is_vit = isinstance(backbone, PromptedViT)
    if is_vit and backbone.out_type != 'cls_token':
        return (f'out_type {backbone.out_type!r}; multi-task batches read '
                "the final [CLS] ('cls_token')")
    if is_vit and list(backbone.out_indices) != [backbone.num_layers - 1]:
        return (f'out_indices {list(backbone.out_indices)}; multi-task '
                'batches read the [CLS] of the last layer only '
                f'([{backbone.num_layers - 1}])')
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
        self.is_vit = isinstance(self.backbone, PromptedViT)
        self.is_swin = isinstance(self.backbone, PromptedSwin)
        if self.is_vit:
            self._fusable = [_fusable(p, self.backbone.num_layers)
                             for p in self.prompts]
        else:  # Swin: each task's own fused blocks (global indices)
            self._fusable = [set(getattr(models[n].backbone, 'fused_layers',
                                         ())) for n in names]
        self.eval()

    def task_index(self, name: str) -> int:
        """The index of a task, as :meth:`forward` takes it."""
        if name not in self.task_names:
            raise KeyError(f'Unknown task {name!r}; loaded: '
                           f'{self.task_names}')
        return self.task_names.index(name)

    @torch.no_grad()
    def extract_feat(self, inputs: torch.Tensor,
                     tasks: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Backbone features of a mixed batch.

        Args:
            inputs (torch.Tensor): (B, C, H, W) preprocessed images.
            tasks (torch.Tensor): (B,) task index of each sample.

        Returns:
            tuple[torch.Tensor]: ViT: the final [CLS], (B, d); ConvNets: the
            feature maps of ``out_indices``.
        """
        if self.is_swin:
            return self._swin_feat(inputs, tasks)
        if not self.is_vit:
            raise TypeError('ConvNet tasks are scored per frame size by '
                            'forward(); their feature maps differ in size')
        return (self._vit_feat(inputs, tasks), )

    def _swin_feat(self, inputs: torch.Tensor,
                   tasks: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The ``out_indices`` outputs of a mixed batch through the prompted
        Swin: each sample's prompts (padded to the longest set, the padding
        masked) join every window of that sample."""
        swin = self.backbone
        B = inputs.shape[0]
        x, hw = swin.patch_embed(inputs)
        if swin.use_abs_pos_embed:
            x = x + resize_pos_embed(swin.absolute_pos_embed,
                                     swin.patch_resolution, hw,
                                     swin.interpolate_mode,
                                     swin.num_extra_tokens)
        x = swin.drop_after_pos(x)
        present = sorted(set(tasks.tolist()))
        stage_prompts = [
            {t: self.prompts[t][str(i)] for t in present
             if str(i) in self.prompts[t]} for i in range(len(swin.stages))
        ]
        width = max(p.num_tokens for stage in stage_prompts
                    for p in stage.values())
        valid = torch.zeros(B, width, dtype=torch.bool, device=x.device)
        # Each sample's own prompt positions, and whether a fused block
        # needs to mask padding (the same for every block of this batch).
        own = self._prompt_positions(present, width, x.device)[tasks]
        own_mask = None if bool(own.all()) else own
        slots = None
        outs = []
        first = 0
        for i, stage in enumerate(swin.stages):
            for j, block in enumerate(stage.blocks):
                if all(first + j in self._fusable[t] for t in present):
                    # Every task's prompts here are replaced at the input
                    # and never read: the fused form, per-sample K/V.
                    kv = self._batch_prompt_kv(
                        stage_prompts[i],
                        lambda p: swin_prompt_kv(
                            block, p.layer_prompts(j, 1).to(x.dtype)),
                        tasks, width)
                    x = fused_swin_block(block, x, hw, kv, own_mask)
                    slots, valid = None, torch.zeros_like(valid)
                    continue
                entering = {t: p for t, p in stage_prompts[i].items()
                            if j in p.layer_ids}
                if entering:
                    if slots is None:
                        slots = x.new_zeros(B, width, x.shape[-1])
                    for t, prompt in entering.items():
                        rows = tasks == t
                        slots[rows, :prompt.num_tokens] = prompt.layer_prompts(
                            j, 1)[0].to(x.dtype)
                        valid[rows, :prompt.num_tokens] = True
                if slots is None or not bool(valid.any()):
                    x = block(x, hw)
                else:
                    keep = None if bool(valid.all()) else valid
                    x, slots = prompted_swin_block(block, x, hw, slots, keep)
            first += len(stage.blocks)
            merge = stage.downsample is not None
            if merge and swin.out_after_downsample:
                x, hw, slots, valid = self._swin_merge(stage, x, hw, slots,
                                                       valid)
            if i in swin.out_indices:
                outs.append(self._swin_output(i, x, hw, slots, valid))
            if merge and not swin.out_after_downsample:
                x, hw, slots, valid = self._swin_merge(stage, x, hw, slots,
                                                       valid)
        return tuple(outs)

    def _swin_merge(self, stage, x, hw, slots, valid):
        """Patch merging; prompts carried or dropped as the backbone's
        ``prompt_merging`` says."""
        if slots is not None:
            if self.backbone.prompt_merging == 'carry':
                slots = merge_prompts(stage.downsample, slots)
            else:
                slots, valid = None, torch.zeros_like(valid)
        x, hw = stage.downsample(x, hw)
        return x, hw, slots, valid

    def _swin_output(self, i, x, hw, slots, valid) -> torch.Tensor:
        """As ``PromptedSwin._output``, with each sample's own prompts in
        ``avg_all``."""
        swin = self.backbone
        norm = getattr(swin, f'norm{i}')
        if swin.out_type == 'featmap':
            return norm(x).view(x.shape[0], *hw, swin.num_features[i]
                                ).permute(0, 3, 1, 2).contiguous()
        total = norm(x).sum(dim=1)
        count = torch.full((x.shape[0], 1), x.shape[1], dtype=x.dtype,
                           device=x.device)
        if swin.out_type == 'avg_all' and slots is not None:
            total = total + (norm(slots) * valid[..., None]).sum(dim=1)
            count = count + valid.sum(dim=1, keepdim=True)
        return total / count

    def _plain_forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The ConvNet's own (mmpretrain) forward, without a frame."""
        for cls in type(self.backbone).__mro__:
            if cls.__module__.startswith('mmpretrain.'):
                return cls.forward(self.backbone, x)
        raise TypeError(f'{type(self.backbone).__name__} has no mmpretrain '
                        'parent')

    def _convnet_logits(self, inputs: torch.Tensor, tasks: torch.Tensor,
                        present: List[int]) -> Dict[int, torch.Tensor]:
        """Per task, the logits of its samples: each sample framed by its
        task's pixel prompt; tasks with frames of one width share a
        backbone pass (the frame widens the input)."""
        groups: Dict[int, List[int]] = {}
        for t in present:
            groups.setdefault(self.prompts[t].num_tokens, []).append(t)
        logits = {}
        for group in groups.values():
            rows = [(tasks == t).nonzero().flatten() for t in group]
            framed = torch.cat([self.prompts[t](inputs[r])
                                for t, r in zip(group, rows)])
            feats = self._plain_forward(framed)
            start = 0
            for t, r in zip(group, rows):
                part = tuple(f[start:start + len(r)] for f in feats)
                logits[t] = self.heads[t](self.necks[t](part))
                start += len(r)
        return logits

    def _vit_feat(self, inputs: torch.Tensor,
                  tasks: torch.Tensor) -> torch.Tensor:
        """Final [CLS] features of a mixed batch through the prompted ViT."""
        vit = self.backbone
        B = inputs.shape[0]
        x, hw = vit.patch_embed(inputs)
        if vit.cls_token is not None:
            x = torch.cat((vit.cls_token.expand(B, -1, -1), x), dim=1)
        x = x + resize_pos_embed(vit.pos_embed, vit.patch_resolution, hw,
                                 mode=vit.interpolate_mode,
                                 num_extra_tokens=vit.num_extra_tokens)
        x = vit.pre_norm(vit.drop_after_pos(x))
        n = vit.num_extra_tokens
        present = sorted(set(tasks.tolist()))
        width = max(self.prompts[t].num_tokens for t in present)
        B, d = x.shape[0], x.shape[-1]
        slots = x.new_zeros(B, width, d)
        valid = torch.zeros(B, width, dtype=torch.bool, device=x.device)
        ones = torch.ones(B, x.shape[1], dtype=torch.bool, device=x.device)
        lengths = self._prompt_positions(present, width, x.device)
        for i, layer in enumerate(vit.layers):
            entering = [t for t in present if i in self.prompts[t]._index]
            if entering:
                # One gather per layer: the entering tasks' prompts, padded.
                table = x.new_zeros(len(self.prompts), width, d)
                enters = torch.zeros(len(self.prompts), dtype=torch.bool,
                                     device=x.device)
                for t in entering:
                    p = self.prompts[t].num_tokens
                    table[t, :p] = self.prompts[t].layer_prompts(i, 1)[0]
                    enters[t] = True
                rows = enters[tasks]
                slots = torch.where(rows[:, None, None], table[tasks], slots)
                valid = valid | (lengths[tasks] & rows[:, None])
            # No mask where every sample uses every prompt position (the
            # faster attention kernels, bit for bit the single-task form).
            mask_needed = not bool(valid.all())
            if all(i in self._fusable[t] for t in present):
                kv = self._batch_prompt_kv(
                    {t: self.prompts[t] for t in present},
                    lambda p: prompt_kv(
                        layer, p.layer_prompts(i, 1).to(x.dtype)),
                    tasks, width)
                keep = torch.cat([valid, ones], dim=1) if mask_needed \
                    else None
                x = fused_layer_forward(layer, x, kv, key_mask=keep)
            elif not bool(valid.any()):  # no prompt has entered yet
                x = layer(x)
            else:
                seq = torch.cat([x[:, :n], slots, x[:, n:]], dim=1)
                if mask_needed:
                    keep = torch.cat([ones[:, :n], valid, ones[:, n:]],
                                     dim=1)
                    seq = masked_layer_forward(layer, seq, keep)
                else:
                    seq = layer(seq)
                x = torch.cat([seq[:, :n], seq[:, n + width:]], dim=1)
                slots = seq[:, n:n + width]
            if i == len(vit.layers) - 1 and vit.final_norm:
                x = vit.ln1(x)
        return x[:, 0]

    def _prompt_positions(self, present: List[int], width: int,
                          device: torch.device) -> torch.Tensor:
        """(tasks, width) bool: the prompt positions each present task
        fills in a sequence padded to ``width`` (its first p)."""
        positions = torch.zeros(len(self.prompts), width, dtype=torch.bool,
                                device=device)
        for t in present:
            prompt = self.prompts[t]
            if isinstance(prompt, nn.ModuleDict):  # Swin: one per stage
                prompt = next(iter(prompt.values()))
            positions[t, :prompt.num_tokens] = True
        return positions

    def _batch_prompt_kv(self, prompts: Dict[int, VisualPrompt],
                         kv_of: Callable[[VisualPrompt], KV],
                         tasks: torch.Tensor, width: int) -> KV:
        """Each sample's prompt keys/values at a layer, padded to
        ``width``: (B, heads, width, head_dims) each, or (1, ...) when the
        batch holds one task.

        Args:
            prompts (dict): Task index -> its prompt module, for the tasks
                present.
            kv_of (Callable): A prompt module -> its (1, heads, p, dh) keys
                and values at this layer.
            tasks (torch.Tensor): (B,) task index of each sample.
            width (int): The padded prompt length.
        """
        kvs = {t: kv_of(prompt) for t, prompt in prompts.items()}
        if len(kvs) == 1:
            return next(iter(kvs.values()))
        like = next(iter(kvs.values()))[0]
        _, heads, _, dh = like.shape
        k = like.new_zeros(len(self.prompts), heads, width, dh)
        v = like.new_zeros(len(self.prompts), heads, width, dh)
        for t, (pk, pv) in kvs.items():
            k[t, :, :pk.shape[2]] = pk[0]
            v[t, :, :pv.shape[2]] = pv[0]
        return k[tasks], v[tasks]

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
        if self.is_vit or self.is_swin:
            feats = self.extract_feat(inputs, tasks)
            logits_of = {
                t: self.heads[t](self.necks[t](tuple(
                    f[tasks == t] for f in feats)))
                for t in present
            }
        else:
            logits_of = self._convnet_logits(inputs, tasks, present)
        scores: List[Optional[torch.Tensor]] = [None] * len(tasks)
        for t in present:
            idx = (tasks == t).nonzero().flatten()
            logits = logits_of[t]
            for j, row in zip(idx.tolist(), logits.softmax(-1)):
                scores[j] = row
        return scores
