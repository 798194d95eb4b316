"""VPTRunner: mmengine's Runner with loading that cannot go silently wrong.

Every vpt_mm config sets ``runner_type='VPTRunner'`` (in
``configs/_base_/default_runtime.py``), so ``tools/train.py``,
``tools/test.py`` and mmpretrain's / mmseg's own tools (which build
``runner_type`` through ``RUNNERS``) all get it:

- ``load_from``, ``tools/test.py CONFIG CKPT`` and ``--resume`` load a
  ``.pth`` **strictly** (every key present, none extra, same shapes, finite
  values) after checking its recorded sha256; a tuned-only ``.safetensors``
  is loaded on top of the config's pretrained backbone, whose fingerprint
  must be the one the file was trained on
  (``allow_other_backbone=True`` in the config allows a deliberate
  transfer).
- ``--resume`` restores the RNG states saved with the checkpoint, so the
  resumed run continues the uninterrupted one bit for bit; ``--resume``
  without a path takes the newest complete checkpoint of the work dir.
- The checkpoint hook is :class:`~vpt_mm.hooks.VPTCheckpointHook` (atomic
  writes, checksums, RNG states, and no copy of a frozen backbone: such a
  small checkpoint is loaded on top of the config's pretrained backbone,
  whose fingerprint must be the recorded one).
"""
from __future__ import annotations

import contextlib
import copy
import glob
import logging
import os.path as osp
import re
from typing import Callable, Optional, Union

from mmengine.config import Config
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner import Runner

from .checkpoints import (
    backbone_source,
    load_training_checkpoint,
    load_tuned,
    load_verified_checkpoint,
    record_of,
    state_dict_without_frozen,
    task_of,
)
from .config import (
    apply_task,
    check_cached_features,
    check_num_classes_in_file,
    random_transforms,
)
from .devices import deterministic_cuda_env
from .integrity import set_rng_state
from .optim import runner_optim_wrapper_cfg
from .registry import RUNNERS

#: mmengine's own default hook names (None removes them).
MMENGINE_DEFAULT_HOOKS = ('runtime_info', 'timer', 'sampler_seed', 'logger',
                          'param_scheduler', 'checkpoint')
#: Checkpoint files of a work dir, with their step.
CHECKPOINT_NAME = re.compile(r'^(?:epoch|iter)_(\d+)\.pth$')


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` without a path continues from.

    ``last_checkpoint`` names it when it names a file that exists;
    otherwise (an empty or stale ``last_checkpoint`` left by a process
    killed while writing it) the checkpoint with the highest step in
    ``work_dir``. Checkpoints are written atomically, so every ``*.pth``
    found is complete.
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = ''
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and osp.isfile(named):
            return named
    found = []
    for path in glob.glob(osp.join(work_dir, '*.pth')):
        match = CHECKPOINT_NAME.match(osp.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    if not found:
        return None
    path = max(found)[1]
    from mmengine.logging import print_log
    print_log(
        f'{pointer} names {named!r}, which does not exist; resuming from the '
        f'newest checkpoint in {work_dir}: {path}',
        logger='current',
        level=logging.WARNING)
    return path


@RUNNERS.register_module()
class VPTRunner(Runner):
    """mmengine's ``Runner`` with strict, verified loading and exact resume.

    Arguments are those of :class:`mmengine.runner.Runner`; the config key
    ``allow_other_backbone`` (default False) lets a tuned-only file load onto
    a backbone it was not trained on, with a warning.
    """

    _weights_ready = False
    _loaded_checkpoint: Optional[dict] = None

    @property
    def allow_other_backbone(self) -> bool:
        """The config's ``allow_other_backbone`` (default False)."""
        value = self.cfg.get('allow_other_backbone', False)
        if not isinstance(value, bool):
            raise TypeError('allow_other_backbone must be True or False, got '
                            f'{value!r}')
        return value

    @property
    def allow_other_task(self) -> bool:
        """The config's ``allow_other_task`` (default False): load a file
        trained on another task, with a warning."""
        value = self.cfg.get('allow_other_task', False)
        if not isinstance(value, bool):
            raise TypeError('allow_other_task must be True or False, got '
                            f'{value!r}')
        return value

    def expected_task(self) -> dict:
        """The task of this run, and the classes of the first dataset it
        has built (test, val, then train), for :func:`check_task`."""
        from torch.utils.data import DataLoader
        expected = task_of(self.cfg)
        for name in ('_test_loop', '_val_loop', '_train_loop'):
            # A built loop holds the built dataloader (the runner's
            # ``_*_dataloader`` attributes stay configs).
            loader = getattr(getattr(self, name, None), 'dataloader', None)
            if isinstance(loader, DataLoader):
                meta = getattr(loader.dataset, 'metainfo', None) or {}
                if meta.get('classes') is not None:
                    expected['classes'] = list(meta['classes'])
                    break
        return expected

    @classmethod
    def from_cfg(cls, cfg) -> 'VPTRunner':
        """mmengine's, with the config's ``task`` and ``data_root`` applied
        first (:func:`~vpt_mm.config.apply_task`), so mmpretrain's and
        mmseg's own ``tools/train.py`` (and ``mim train``) select the task
        and the data as vpt_mm's tools do: ``--cfg-options task=eurosat
        data_root=DIR`` sets every benchmark dataset and the head's
        ``num_classes``."""
        cfg = copy.deepcopy(cfg)
        if cfg.filename and osp.isfile(cfg.filename):
            check_num_classes_in_file(cfg.filename)
        apply_task(cfg)
        check_cached_features(cfg)
        return super().from_cfg(cfg)

    def build_optim_wrapper(self, optim_wrapper):
        """mmengine's, with :class:`~vpt_mm.optim.VPTOptimWrapperConstructor`
        (frozen parameters left out, quietly) for an ``optim_wrapper`` that
        names no ``constructor``, and mmengine's ``AmpOptimWrapper``
        switched to :class:`~vpt_mm.amp.CPUAmpOptimWrapper` without a GPU
        (:func:`~vpt_mm.amp.amp_wrapper_for_device`)."""
        return super().build_optim_wrapper(
            runner_optim_wrapper_cfg(optim_wrapper))

    def register_default_hooks(self, hooks=None) -> None:
        """mmengine's default hooks, with :class:`VPTCheckpointHook` in
        place of ``CheckpointHook``. Any entry set to None is switched off
        (mmengine allows that for its own names only), e.g.
        ``default_hooks.finite_loss=None``."""
        hooks = {
            k: v
            for k, v in (hooks or {}).items()
            if v is not None or k in MMENGINE_DEFAULT_HOOKS
        }
        ckpt = hooks.get('checkpoint', dict(type='CheckpointHook',
                                            interval=1))
        if isinstance(ckpt, dict) and ckpt.get('type') == 'CheckpointHook':
            hooks['checkpoint'] = dict(ckpt, type='VPTCheckpointHook')
        super().register_default_hooks(hooks)

    def _init_model_weights(self) -> None:
        super()._init_model_weights()
        self._weights_ready = True

    def _bare_model(self):
        model = self.model.module if is_model_wrapper(
            self.model) else self.model
        if isinstance(model, BaseTTAModel):
            model = model.module
        return model

    def load_checkpoint(self,
                        filename: str,
                        map_location: Union[str, Callable] = 'cpu',
                        strict: bool = True,
                        revise_keys: list = [(r'^module\.', '')]) -> dict:
        """Load a checkpoint strictly (``strict`` is ignored: always).

        A ``.pth`` must match its recorded sha256 (if it records one) and
        fit the model exactly; a ``.safetensors`` tuned-only file is loaded
        on top of the config's pretrained backbone (initialised first if
        the runner has not done it), whose fingerprint must match.
        """
        model = self._bare_model()
        if str(filename).endswith('.safetensors'):
            if not self._weights_ready:
                model.init_weights()
                self._weights_ready = True
            meta = load_tuned(model, filename, self.allow_other_backbone,
                              self.expected_task(), self.allow_other_task)
            self._has_loaded = True
            self.logger.info(
                f'Loaded the tuned-only file {filename} (sha256 verified; '
                + backbone_source(model, meta.get('backbone_fingerprint'),
                                  self.allow_other_backbone) + ')')
            return dict(meta=dict(vpt_mm_tuned=meta))
        checkpoint, verified = load_verified_checkpoint(
            filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        state = checkpoint.get('state_dict', checkpoint)
        for pattern, repl in revise_keys:
            state = {re.sub(pattern, repl, k): v for k, v in state.items()}
        # A checkpoint without the frozen backbone gets the config's
        # pretrained one (tools/test.py never initialises the model).
        small = load_training_checkpoint(model, checkpoint, state, filename,
                                         self.allow_other_backbone,
                                         self._weights_ready,
                                         self.expected_task(),
                                         self.allow_other_task)
        self._weights_ready = self._weights_ready or small
        self._has_loaded = True
        self._loaded_checkpoint = checkpoint
        if verified:
            source = backbone_source(
                model, record_of(checkpoint).get('backbone_fingerprint'),
                self.allow_other_backbone)
            self.logger.info(
                f'Loaded checkpoint {filename} (strict, sha256 verified' +
                (f'; {source})' if small else ')'))
        else:
            self.logger.warning(
                f'Loaded checkpoint {filename} strictly; it records no '
                'sha256 (not written by vpt_mm), so its bytes could not be '
                'verified')
        return checkpoint

    def save_checkpoint(self, *args, **kwargs) -> None:
        """mmengine's, with an interrupt (Ctrl-C) reported as one: mmengine
        formats the config for the checkpoint's meta under a bare
        ``except``, which turns a ``KeyboardInterrupt`` into "Failed to
        format the config file" and a dump of the whole config. The
        checkpoint being written is a temporary file, so the previous one
        is intact.

        With vpt_mm's checkpoint hook (unless ``save_frozen``), the model's
        state dict is taken without the frozen backbone
        (:func:`~vpt_mm.checkpoints.state_dict_without_frozen`): mmengine
        copies it to the CPU before the hook drops those tensors."""
        from .hooks import VPTCheckpointHook
        hook = next((h for h in getattr(self, '_hooks', ())
                     if isinstance(h, VPTCheckpointHook)), None)
        small = contextlib.nullcontext()
        if hook is not None and not hook.save_frozen:
            small = state_dict_without_frozen(
                self.model.module if is_model_wrapper(self.model) else
                self.model)
        try:
            with small:
                super().save_checkpoint(*args, **kwargs)
        except SyntaxError as err:
            if isinstance(err.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt(
                    'interrupted while saving a checkpoint (the previous '
                    'checkpoint is intact)') from None
            raise

    def load_or_resume(self) -> None:
        """mmengine's, with ``--resume`` (no path) taking the newest
        complete checkpoint (:func:`latest_checkpoint`)."""
        if self._resume and self._load_from is None and not self._has_loaded:
            self._load_from = latest_checkpoint(self.work_dir)
            if self._load_from is None:
                self.logger.info(f'No checkpoint in {self.work_dir} to '
                                 'resume from; training from the start')
                self._resume = False
        super().load_or_resume()

    def resume(self,
               filename: str,
               resume_optimizer: bool = True,
               resume_param_scheduler: bool = True,
               map_location: Union[str, Callable] = 'default') -> None:
        """mmengine's resume, plus the RNG states saved in the checkpoint
        (this process's own, in a distributed run)."""
        if str(filename).endswith('.safetensors'):
            raise ValueError(
                f'--resume needs a training checkpoint (.pth with optimizer '
                f'and scheduler states), not the tuned-only file {filename}; '
                'use load_from to start a new run from it')
        super().resume(filename, resume_optimizer, resume_param_scheduler,
                       map_location)
        states = (self._loaded_checkpoint or {}).get('rng_state')
        if not states:
            self.logger.warning(
                f'{filename} holds no RNG state (not written by vpt_mm): '
                'the resumed run will not repeat the uninterrupted one '
                'exactly')
        elif len(states) != self.world_size:
            self.logger.warning(
                f'{filename} was saved by {len(states)} processes, this run '
                f'has {self.world_size}: RNG states are not restored, so the '
                'resumed run will not repeat the uninterrupted one exactly')
        else:
            set_rng_state(states[self.rank])
        loader = self.cfg.get('train_dataloader', None) or {}
        random = random_transforms(self.cfg)
        if (random and loader.get('num_workers', 0) > 0
                and loader.get('persistent_workers', False)):
            self.logger.warning(
                f'The training pipeline is random ({random}) and its workers '
                'persist across epochs (persistent_workers=True): their '
                'random states are not in the checkpoint, so the resumed run '
                'draws other augmentations than the uninterrupted one. Set '
                'train_dataloader.persistent_workers=False for an exact '
                'resume.')


def build_runner(cfg: Config):
    """The runner of vpt_mm's tools: the config's ``runner_type`` if it
    names one, else :class:`~vpt_mm.engine.VPTRunner` (strict, verified
    loading and exact resume)."""
    from mmengine.registry import RUNNERS
    deterministic_cuda_env(cfg)
    if cfg.get('runner_type', None) is not None:
        return RUNNERS.build(cfg)
    return VPTRunner.from_cfg(cfg)
