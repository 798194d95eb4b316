"""Training checkpoints (mmengine's): vpt_mm's integrity record, small
checkpoints without the frozen backbone, strict loading of a read state."""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from typing import Dict, Iterator, Optional

import torch
import torch.nn as nn

from ..integrity import check_finite, digest
from .records import (
    CHECKPOINT_META_KEY,
    _check_fingerprint,
    _omitted_keys,
    check_task,
    detach_file_record,
    frozen_fingerprint,
    frozen_keys,
    readout_of,
    recorded_task,
)
from .strict import _check_fits

#: Parts of an mmengine checkpoint covered by its recorded sha256.
CHECKSUMMED = ('state_dict', 'optimizer', 'param_schedulers', 'rng_state')


def omit_frozen(model: nn.Module,
                state: Dict[str, torch.Tensor]) -> Optional[dict]:
    """``state`` (the model's state dict) without the frozen backbone's
    tensors (:func:`frozen_keys`), the state dict's ``_metadata`` kept; None
    if no parameter is frozen (full fine-tuning saves whole checkpoints,
    even if some buffer sits outside every tuned module).

    A training checkpoint saved this way holds what trains; loading it
    rebuilds the backbone from the config's pretrained checkpoint and checks
    its fingerprint."""
    frozen = _omitted_keys(model)
    if not frozen:
        return None
    small = OrderedDict((k, v) for k, v in state.items() if k not in frozen)
    metadata = getattr(state, '_metadata', None)
    if metadata is not None:
        small._metadata = metadata
    return small


@contextmanager
def state_dict_without_frozen(model: nn.Module) -> Iterator[None]:
    """While active, ``model.state_dict()`` leaves out what
    :func:`omit_frozen` would drop (nothing under full fine-tuning).

    mmengine's ``Runner.save_checkpoint`` copies ``model.state_dict()`` to
    the CPU before any hook sees it: on a GPU that is a device-to-host copy
    of the whole frozen backbone per save, only to be dropped.
    :class:`~vpt_mm.engine.VPTRunner` saves inside this context, so only
    what is kept is copied. Only the model's own ``state_dict`` call is
    affected (its backbone's, e.g. for the fingerprint, is whole).
    """
    frozen = _omitted_keys(model)
    if not frozen:
        yield
        return

    def drop(module, state, prefix, local_metadata) -> None:
        for key in [k for k in state if k[len(prefix):] in frozen]:
            del state[key]

    handle = model.register_state_dict_post_hook(drop)
    try:
        yield
    finally:
        handle.remove()


def record_of(checkpoint: dict) -> dict:
    """vpt_mm's record (``meta['vpt_mm']``) of an mmengine checkpoint; empty
    for a checkpoint vpt_mm did not write."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    return (meta or {}).get(CHECKPOINT_META_KEY) or {}


def omits_frozen(checkpoint: dict) -> bool:
    """Whether an mmengine checkpoint was saved without its frozen backbone
    (see :func:`omit_frozen`)."""
    return bool(record_of(checkpoint).get('omits_frozen'))


def checkpoint_record(model: nn.Module, checkpoint: dict,
                      omits: bool = False,
                      task: Optional[str] = None) -> dict:
    """vpt_mm's integrity record of an mmengine checkpoint about to be
    saved: the sha256 of its weights, optimizer, scheduler and RNG states,
    the fingerprint of the model's frozen backbone, whether its state
    dict leaves that backbone out (``omits``, see :func:`omit_frozen`), the
    benchmark task and the readout (:func:`readout_of`); the class names
    are mmengine's ``meta['dataset_meta']``."""
    return dict(
        sha256=digest({k: checkpoint[k]
                       for k in CHECKSUMMED if k in checkpoint}),
        backbone_fingerprint=frozen_fingerprint(model),
        omits_frozen=omits,
        task=task,
        readout=readout_of(model))


def verify_checkpoint(checkpoint: dict, filename: str) -> bool:
    """Check an mmengine checkpoint against its recorded sha256.

    Returns:
        bool: True if verified; False if the checkpoint records no checksum
        (written without vpt_mm's checkpoint hook).

    Raises:
        ValueError: If the contents do not match the record.
    """
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{filename} is not a checkpoint (a dict), got '
                         f'{type(checkpoint).__name__}')
    record = checkpoint.get('meta', {}).get(CHECKPOINT_META_KEY)
    if not record:
        return False
    actual = digest({k: checkpoint[k] for k in CHECKSUMMED
                     if k in checkpoint})
    if actual != record.get('sha256'):
        raise ValueError(
            f'{filename} is corrupted: its contents hash to sha256 '
            f'{actual[:16]}..., the checkpoint records '
            f'{str(record.get("sha256"))[:16]}...')
    return True


def load_full_checkpoint(model: nn.Module,
                         state: Dict[str, torch.Tensor],
                         source: str,
                         record: Optional[dict] = None,
                         allow_other_backbone: bool = False) -> None:
    """Load a training checkpoint's state dict strictly.

    Every key of the model must be present with the same shape, and no
    other key may be; floating tensors must be finite. A checkpoint saved
    without its frozen backbone (``record['omits_frozen']``, see
    :func:`omit_frozen`) holds every key but those, and the model's
    backbone (its pretrained checkpoint, loaded by the caller) must have the
    fingerprint the checkpoint records.

    Args:
        model (nn.Module): The model to load into.
        state (dict): The checkpoint's state dict.
        source (str): The checkpoint's name, for messages.
        record (dict, optional): The checkpoint's ``meta['vpt_mm']``.
        allow_other_backbone (bool): Load a small checkpoint onto another
            backbone with a warning instead of an error. Defaults to False.

    Raises:
        ValueError: Naming the first bad key, and how many there are, or the
            fingerprints of both backbones.
    """
    expected = model.state_dict()
    omitted = set()
    if record and record.get('omits_frozen'):
        omitted = frozen_keys(model)
        expected = {k: v for k, v in expected.items() if k not in omitted}
        _check_fingerprint(record.get('backbone_fingerprint'),
                           frozen_fingerprint(model), source,
                           allow_other_backbone)
    _check_fits(expected, state, f'{source} does not fit the model')
    check_finite(state, source)
    # _check_fits made sure that only the omitted keys are missing; the
    # file is checked, with this call's options, so the modules' own check
    # of a file's record (guard_loads) is not asked again.
    model.load_state_dict(detach_file_record(state), strict=not omitted)


def load_training_checkpoint(model: nn.Module,
                             checkpoint: dict,
                             state: Dict[str, torch.Tensor],
                             source: str,
                             allow_other_backbone: bool = False,
                             initialised: bool = False,
                             task: Optional[dict] = None,
                             allow_other_task: bool = False) -> bool:
    """Load a read (and verified) training checkpoint's ``state`` strictly;
    if it was saved without its frozen backbone, that comes from the
    config's pretrained checkpoint (``model.init_weights()``, unless
    ``initialised``) and must have the recorded fingerprint. Its task and
    readout are checked (:func:`check_task`).

    Returns:
        bool: Whether the checkpoint omitted the frozen backbone.
    """
    check_task(recorded_task(checkpoint.get('meta') or {}), model, source,
               task, allow_other_task)
    small = omits_frozen(checkpoint)
    if small and not initialised:
        model.init_weights()
    load_full_checkpoint(model, state, source, record_of(checkpoint),
                         allow_other_backbone)
    return small
