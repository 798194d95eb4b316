"""Reading any checkpoint file, and mmengine's loaders.

:func:`load_model_checkpoint` loads any file vpt_mm reads into a built
model (the tools outside a runner). mmengine's ``CheckpointLoader`` reads
``*.safetensors`` paths through :func:`load_from_tuned` and local files
through :func:`load_from_vpt_mm` (registered by
:func:`register_checkpoint_schemes` on ``import vpt_mm``); the state dicts
they return carry the file's record in their load metadata
(:func:`attach_file_record`), which the one load pre-hook of vpt_mm's
models (:func:`guard_loads`) checks, so generic non-strict loaders
(mmpretrain's inferencer) load strictly too. The mechanism is described in
``docs/en/advanced_guides/checkpoints.md``."""
from __future__ import annotations

import logging
import os
from typing import Callable, Optional, Tuple

import torch.nn as nn

from ..integrity import check_finite
from .records import (
    CHECKPOINT_META_KEY,
    FILE_RECORD_KEY,
    _backbone_of,
    _check_fingerprint,
    _check_prompt_meta,
    attach_file_record,
    check_task,
    file_record,
    frozen_fingerprint,
    frozen_keys,
    recorded_task,
    tuned_state_dict,
)
from .strict import _check_fits, extract_state_dict
from .training import (
    load_training_checkpoint,
    verify_checkpoint,
)
from .tuned import _check_tuned_keys, load_tuned, read_tuned


def load_verified_checkpoint(filename: str,
                             map_location=None) -> Tuple[dict, bool]:
    """Read any checkpoint mmengine can read, verified against its recorded
    sha256.

    Local files were verified by :func:`load_from_vpt_mm` (the
    loader scheme) already and are not hashed a second time.

    Returns:
        tuple: The checkpoint, and whether it recorded a sha256 (False for a
        checkpoint vpt_mm did not write).

    Raises:
        ValueError: If the contents do not match the record.
    """
    from mmengine.runner.checkpoint import _load_checkpoint
    checkpoint = _load_checkpoint(filename, map_location=map_location)
    state = checkpoint.get('state_dict') if isinstance(checkpoint,
                                                       dict) else None
    if state is not None and file_record(state) is not None:
        return checkpoint, True
    return checkpoint, verify_checkpoint(checkpoint, filename)


def load_model_checkpoint(model: nn.Module,
                          filename: str,
                          allow_other_backbone: bool = False,
                          task: Optional[dict] = None,
                          allow_other_task: bool = False) -> dict:
    """Load any checkpoint vpt_mm reads into a freshly built ``model``,
    strictly, outside a runner (the analysis and conversion tools).

    - ``*.safetensors``: a tuned-only file on top of the config's pretrained
      backbone (:func:`load_tuned`; the backbone is initialised here);
    - a training checkpoint: verified against its sha256, loaded strictly
      (:func:`load_full_checkpoint`); one saved without its frozen
      backbone gets the pretrained one first (initialised here), whose
      fingerprint must match.

    Args:
        model (nn.Module): Built from the config, not initialised.
        filename (str): ``.pth`` or ``.safetensors``.
        allow_other_backbone (bool): See :func:`load_tuned`.
        task (dict, optional): The run's task (:func:`task_of`).
        allow_other_task (bool): See :func:`check_task`.

    Returns:
        dict: The checkpoint's ``meta`` (a tuned file's metadata).
    """
    if str(filename).endswith('.safetensors'):
        model.init_weights()
        return load_tuned(model, filename, allow_other_backbone, task,
                          allow_other_task)
    checkpoint, verified = load_verified_checkpoint(filename,
                                                    map_location='cpu')
    if not verified:
        from mmengine.logging import print_log
        print_log(f'{filename} records no sha256 (not written by vpt_mm); '
                  'its bytes could not be verified', logger='current',
                  level=logging.WARNING)
    load_training_checkpoint(model, checkpoint,
                             extract_state_dict(checkpoint), filename,
                             allow_other_backbone, task=task,
                             allow_other_task=allow_other_task)
    return checkpoint.get('meta') or {}


def load_from_tuned(filename: str, map_location=None) -> dict:
    """mmengine ``CheckpointLoader`` scheme of ``*.safetensors`` paths.

    Used by every generic mmengine loader (``load_checkpoint``, the
    mmpretrain and mmseg inferencers). A vpt_mm file is verified
    (:func:`read_tuned`); another library's safetensors file (e.g. timm's
    ``model.safetensors``, a pretrained backbone) is returned as it is.
    A vpt_mm file's state dict carries the file's record
    (:func:`attach_file_record`), from which the load pre-hook of vpt_mm's
    models (:func:`guard_loads`) loads and verifies the frozen backbone.
    """
    if not _is_vpt_mm_safetensors(filename):
        # Another library's file (e.g. timm's hub ``model.safetensors``),
        # read as it is: its loader (load_pretrained_backbone) is strict.
        from safetensors.torch import load_file
        return dict(state_dict=load_file(filename))
    state, meta = read_tuned(filename)
    state = attach_file_record(state, dict(meta, kind='tuned',
                                           filename=filename))
    info = dict(vpt_mm_tuned=filename)
    classes = recorded_task(meta)['classes']
    if classes is not None:  # what mmpretrain's inferencer labels with
        info['dataset_meta'] = dict(classes=classes)
    return dict(state_dict=state, meta=info)


def _is_vpt_mm_safetensors(filename: str) -> bool:
    """Whether a safetensors file's header names a vpt_mm format (a tuned
    file of any version; a damaged header counts as one, so that
    :func:`read_tuned` names the damage)."""
    from safetensors import safe_open
    try:
        with safe_open(filename, framework='pt') as f:
            meta = f.metadata() or {}
    except Exception:
        return True
    return str(meta.get('format', '')).startswith('vpt_mm.')


def _read_local(filename: str, map_location=None):
    """mmengine's local reader, with the file named when it cannot be
    read (a truncated or empty file gives a bare ``EOFError`` /
    ``OSError: [Errno 22]`` otherwise)."""
    import pickle
    import zipfile

    from mmengine.runner.checkpoint import load_from_local
    try:
        return load_from_local(filename, map_location)
    except FileNotFoundError:
        raise
    except (EOFError, OSError, RuntimeError, pickle.UnpicklingError,
            zipfile.BadZipFile, ValueError) as err:
        size = os.path.getsize(filename) if os.path.isfile(filename) else 0
        raise ValueError(
            f'{filename} is not a readable checkpoint ({size} bytes: '
            f'truncated, empty or not a torch file): {type(err).__name__}: '
            f'{err}') from err


def load_from_vpt_mm(filename: str, map_location=None) -> dict:
    """mmengine ``CheckpointLoader`` scheme of local files.

    mmengine's own reader, plus, for a checkpoint written by vpt_mm (one
    with ``meta['vpt_mm']``): the recorded sha256 is verified, non-finite
    tensors are refused, and the file's record is attached to the state dict
    (:func:`attach_file_record`) so that vpt_mm's models load it strictly
    (:func:`guard_loads`) even when the caller (e.g. mmpretrain's
    inferencer) loads non-strictly. Other files are returned unchanged.
    """
    checkpoint = _read_local(filename, map_location)
    if (isinstance(checkpoint, dict)
            and isinstance(checkpoint.get('meta'), dict)
            and checkpoint['meta'].get(CHECKPOINT_META_KEY)):
        verify_checkpoint(checkpoint, filename)
        state = checkpoint['state_dict']
        check_finite(state, filename)
        record = checkpoint['meta'][CHECKPOINT_META_KEY]
        marked = attach_file_record(state, dict(
            kind='checkpoint', filename=filename,
            readout=record.get('readout'),
            omits_frozen=bool(record.get('omits_frozen')),
            backbone_fingerprint=record.get('backbone_fingerprint')),
            getattr(state, '_metadata', None))
        checkpoint = dict(checkpoint, state_dict=marked)
    return checkpoint


#: Where :func:`guard_loads` keeps a module's guard: the strict loader of
#: the pretrained frozen backbone it answers for, or True.
_GUARD = '_vpt_mm_load_guard'


def guard_loads(module: nn.Module,
                load_pretrained: Optional[Callable[[], bool]] = None) -> None:
    """Make ``module`` check every vpt_mm file loaded into it (once).

    Registers ``_check_loaded_file`` as a load pre-hook: a file that
    carries a record (:func:`attach_file_record`) must fit the module
    exactly (keys and shapes; a tuned-only file: exactly its tuned tensors),
    with the readout, task and prompt shapes it was trained with. A file
    without its frozen backbone (a tuned-only file, a small training
    checkpoint) needs the one it was trained on: if the module's frozen
    tensors do not have the recorded fingerprint, ``load_pretrained`` (of
    the backbone that answers for them) loads them first, and the
    fingerprint must match then. Generic, non-strict mmengine loaders
    (``load_checkpoint``, mmpretrain's ``get_model(cfg, pretrained=FILE)``,
    which never initialises weights) therefore load vpt_mm's files as
    strictly as vpt_mm's own loaders.

    vpt_mm's backbones guard themselves, with their
    :meth:`~vpt_mm.backbones.frozen.FrozenBackboneMixin.load_pretrained`;
    a model that is given a guarded module is guarded in turn (a module
    registration hook of :mod:`vpt_mm.backbones.frozen`), up to the root.

    Args:
        module (nn.Module): The module.
        load_pretrained (callable, optional): For a backbone: loads its
            pretrained checkpoint strictly, returning False where it has
            none.
    """
    if module.__dict__.get(_GUARD):
        return
    module.__dict__[_GUARD] = load_pretrained or True
    module._register_load_state_dict_pre_hook(_check_loaded_file,
                                              with_module=True)


def is_guarded(module: nn.Module) -> bool:
    """Whether :func:`guard_loads` guards ``module``."""
    return bool(module.__dict__.get(_GUARD))


def _check_loaded_file(module: nn.Module, state: dict, prefix: str,
                       local_metadata: dict, *args) -> None:
    """The load pre-hook of :func:`guard_loads`.

    Raises:
        ValueError: Naming the first key that does not fit, the readout,
            task or prompt shape the file was trained with, or both
            fingerprints of another frozen backbone.
    """
    record = (local_metadata or {}).get(FILE_RECORD_KEY)
    if not record:
        return
    source = record['filename']
    own = {k[len(prefix):]: v for k, v in state.items()
           if k.startswith(prefix)}
    if record['kind'] == 'tuned':
        _check_prompt_meta({k[len(prefix):]: v for k, v in record.items()
                            if k.startswith(prefix)}, module, source)
        check_task(recorded_task(record), module, source)
        _check_tuned_keys(tuned_state_dict(module), own, source)
    else:
        if record.get('readout'):
            check_task(dict(readout=record['readout']), module, source)
        expected = module.state_dict()
        if record['omits_frozen']:
            omitted = frozen_keys(module)
            expected = {k: v for k, v in expected.items()
                        if k not in omitted}
        _check_fits(expected, own,
                    f'{source} does not fit {type(module).__name__}')
    if record['kind'] == 'tuned' or record['omits_frozen']:
        backbone = _backbone_of(module)
        # One module checks the frozen backbone: the backbone itself where
        # it holds tensors of the file (it sees the record then), else the
        # model holding it; a bare backbone at the root of the load always.
        if backbone is module:
            answers = bool(own) or not prefix
        else:
            answers = not any(k.startswith('backbone.') for k in own)
        if answers:
            _check_frozen_backbone(module, backbone, record, source)


def _check_frozen_backbone(module: nn.Module, backbone: nn.Module,
                           record: dict, source: str) -> None:
    """Bring in the frozen backbone a file was trained on (the backbone's
    own strict pretrained load) unless ``module`` has it already, and
    verify its fingerprint."""
    recorded = record.get('backbone_fingerprint')
    actual = frozen_fingerprint(module)
    load = backbone.__dict__.get(_GUARD)
    if actual != recorded and callable(load) and load():
        actual = frozen_fingerprint(module)
    _check_fingerprint(recorded, actual, source, allow_other_backbone=False)


def register_checkpoint_schemes() -> None:
    """Let mmengine's ``CheckpointLoader`` read ``*.safetensors`` paths
    through :func:`load_from_tuned`, and local checkpoints through
    :func:`load_from_vpt_mm` (idempotent)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(
        prefixes=SAFETENSORS_SCHEME, loader=load_from_tuned,
        force=True)
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_vpt_mm, force=True)


#: Matches a path ending in ``.safetensors`` (mmengine matches schemes with
#: ``re.match`` at the start of the path).
SAFETENSORS_SCHEME = r'(?=.*\.safetensors$)'
