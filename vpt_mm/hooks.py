"""Hooks registered into mmpretrain's ``HOOKS``."""
from __future__ import annotations

import math
import os
import os.path as osp
from typing import Optional

import torch
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper

from .fileio import atomic_replace, atomic_write_text, write_json
from .integrity import rng_state, set_rng_state
from .registry import ENGINE_HOOKS, HOOKS
from .validation import require_bool

#: Written to a work dir by :class:`NonFiniteLossHook` when a run diverges.
DIVERGED_FILE = 'diverged.json'
#: Suffix of a checkpoint being written.
TMP_SUFFIX = '.tmp'


@HOOKS.register_module()
class NumClassesCheckHook(Hook):
    """Fail early when the head's ``num_classes`` differs from the number of
    classes of a dataset it is trained or evaluated on.

    Benchmark configs choose both from one ``task`` key (``--task``), so
    with vpt_mm's tools a mismatch cannot happen; this hook makes it an
    error for any other launcher or hand-edited config too. Models without
    a ``head.num_classes`` and datasets without class names are skipped.
    """

    priority = 'VERY_HIGH'

    @staticmethod
    def _check(runner, loader, stage: str) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        num_classes: Optional[int] = getattr(
            getattr(model, 'head', None), 'num_classes', None)
        dataset = getattr(loader, 'dataset', None)
        classes = getattr(dataset, 'metainfo', {}).get('classes', None)
        if num_classes is None or classes is None:
            return
        if len(classes) != num_classes:
            if getattr(dataset, 'task', None) is not None:
                fix = ('select the task with --task rather than editing '
                       'num_classes')
            else:
                fix = f'set model.head.num_classes={len(classes)}'
            raise ValueError(
                f'The head predicts {num_classes} classes but the {stage} '
                f'dataset ({type(dataset).__name__}) has {len(classes)}; '
                + fix)

    def before_train(self, runner) -> None:
        self._check(runner, runner.train_loop.dataloader, 'train')

    def before_val(self, runner) -> None:
        self._check(runner, runner.val_loop.dataloader, 'val')

    def before_test(self, runner) -> None:
        self._check(runner, runner.test_loop.dataloader, 'test')


@ENGINE_HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training at the first non-finite loss.

    A diverged run (NaN or inf loss, e.g. from too large a learning rate)
    would otherwise train to the end, save NaN prompts and score 0.0. This
    hook raises a :class:`FloatingPointError` naming the iteration, the loss
    and the learning rate, and writes the same to
    ``<work_dir>/diverged.json`` (which ``tools/sweep.py`` reads to record
    the grid point as diverged). It is on in every vpt_mm config
    (``default_hooks.finite_loss``); ``--cfg-options
    default_hooks.finite_loss=None`` switches it off.

    In a distributed run the decision is one for all processes: a
    non-finite loss on any rank stops every rank at the same iteration (a
    rank that stopped alone would leave the others waiting in the next
    gradient all-reduce), and only rank 0 writes ``diverged.json``, naming
    the ranks whose loss was not finite.
    """

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        from mmengine.dist import (
            all_gather_object,
            all_reduce,
            get_rank,
            get_world_size,
        )
        losses = {
            k: float(v.detach()) if hasattr(v, 'detach') else float(v)
            for k, v in (outputs or {}).items() if k.startswith('loss')
        }
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        distributed = get_world_size() > 1
        if distributed:
            flag = torch.tensor([float(bool(bad))])
            all_reduce(flag, op='max')
            if not flag.item():
                return
            per_rank = all_gather_object(losses)
            ranks = [r for r, rank_losses in enumerate(per_rank) if any(
                not math.isfinite(v) for v in rank_losses.values())]
            # Every rank reports the same: the first diverged rank's loss.
            losses = per_rank[ranks[0]]
            bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        elif not bad:
            return
        lrs = runner.optim_wrapper.get_lr()
        lr = {k: [float(x) for x in v] for k, v in lrs.items()}
        info = dict(
            iter=runner.iter + 1,
            epoch=runner.epoch + 1,
            loss=losses,
            lr=lr.get('lr', lr))
        where = ''
        if distributed:
            info['ranks'] = ranks
            where = f' on rank(s) {ranks}'
        path = osp.join(runner.work_dir, DIVERGED_FILE)
        if get_rank() == 0:
            write_json(info, path)
        flat = [x for v in lr.values() for x in v]
        advice = ('Lower the learning rate' if any(x > 0 for x in flat) else
                  'The learning rate is 0, so it is not the cause: look for '
                  'non-finite input images or model weights')
        raise FloatingPointError(
            f'Training diverged: non-finite loss {bad}{where} at iteration '
            f'{info["iter"]} (epoch {info["epoch"]}), lr {info["lr"]}. '
            f'{advice}; recorded in {path}')


@ENGINE_HOOKS.register_module()
class VPTCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` with checkpoints a number can rely on.

    - **Atomic**: each checkpoint is written to a temporary file and
      renamed; ``last_checkpoint`` is rewritten the same way, after the
      file is complete; older checkpoints are deleted only then. A process
      killed at any moment leaves the previous checkpoint usable.
    - **Verified**: the checkpoint's ``meta['vpt_mm']`` records the sha256
      of its weights, optimizer, scheduler and RNG states, and the
      fingerprint of the frozen backbone; :class:`~vpt_mm.engine.VPTRunner`
      checks the sha256 when it loads one.
    - **Exact resume**: the RNG states of every process (python, numpy,
      torch, CUDA) are saved, and validation during training runs on a
      stashed copy of them, so the training stream of random numbers does
      not depend on whether (or where) the run was interrupted.
    - **Small**: a model with a frozen backbone (VPT, Linear, Bias, ...) is
      saved without the backbone's frozen tensors (only what trains, plus
      optimizer, scheduler and RNG states); loading it
      (``--resume``, ``load_from``, ``tools/test.py``, ``extract_tuned.py``)
      rebuilds the backbone from the config's pretrained checkpoint and
      checks its fingerprint. Full fine-tuning saves everything anyway.

    :class:`~vpt_mm.engine.VPTRunner` uses it in place of
    ``CheckpointHook``.

    Args:
        save_frozen (bool): Save the frozen backbone too (whole-model
            checkpoints, as mmengine writes them), e.g.
            ``--cfg-options default_hooks.checkpoint.save_frozen=True``.
            Defaults to False.
        **kwargs: mmengine's ``CheckpointHook`` arguments.
    """

    def __init__(self, *args, save_frozen: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.save_frozen = require_bool('save_frozen', save_frozen)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        from mmengine.dist import all_gather_object, is_main_process
        from mmengine.fileio import LocalBackend
        self._rng_states = all_gather_object(rng_state())
        if not isinstance(self.file_backend, LocalBackend):
            # Remote storage has no rename; mmengine's order of operations.
            return super()._save_checkpoint_with_step(runner, step, meta)
        delete = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                delete.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename + TMP_SUFFIX,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        atomic_replace(self.last_ckpt + TMP_SUFFIX, self.last_ckpt)
        atomic_write_text(
            osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for old in delete:
            path = osp.join(self.out_dir, self.filename_tmpl.format(old))
            if osp.isfile(path):
                os.remove(path)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Add the RNG states and the integrity record."""
        from .checkpoints import (
            CHECKPOINT_META_KEY,
            checkpoint_record,
            omit_frozen,
        )
        # Periodic saves gathered every process's state just before; any
        # other save (e.g. save_best, during validation) holds this
        # process's training-stream state.
        states, self._rng_states = getattr(self, '_rng_states', None), None
        if not states:
            stashed = getattr(self, '_val_rng', None)
            states = [stashed if stashed is not None else rng_state()]
        checkpoint['rng_state'] = states
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        small = None if self.save_frozen else omit_frozen(
            model, checkpoint['state_dict'])
        if small is not None:
            checkpoint['state_dict'] = small
        checkpoint['meta'][CHECKPOINT_META_KEY] = checkpoint_record(
            model, checkpoint, small is not None,
            task=runner.cfg.get('task', None))

    def before_val(self, runner) -> None:
        self._val_rng = rng_state()

    def after_val(self, runner) -> None:
        state = getattr(self, '_val_rng', None)
        if state is not None:
            set_rng_state(state)
            self._val_rng = None
