"""Reading any checkpoint file, and mmengine's loaders.

:func:`load_model_checkpoint` loads any file vpt_mm reads into a built
model (the tools outside a runner). mmengine's ``CheckpointLoader`` reads
``*.safetensors`` paths through :func:`load_from_tuned` and local files
through :func:`load_from_vpt_mm` (registered by
:func:`register_checkpoint_schemes` on ``import vpt_mm``); the state dicts
they return carry the file's record in ``_metadata`` for the load
pre-hooks of vpt_mm's modules (:func:`check_whole_model`,
:func:`check_full_source`, :func:`check_tuned_source`), so generic
non-strict loaders (mmpretrain's inferencer) load strictly too."""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Callable, Optional, Tuple

import torch.nn as nn

from ..integrity import check_finite
from .records import (
    CHECKPOINT_META_KEY,
    _check_fingerprint,
    _check_prompt_meta,
    check_task,
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
    if isinstance(getattr(state, '_metadata', None), _CheckpointMarker):
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


class _TunedMarker(dict):
    """``state_dict._metadata`` of a tuned-only file read by mmengine's
    generic loader: every module's ``local_metadata`` carries the file's
    record, so a prompted backbone's load pre-hook can recognise it."""

    def __init__(self, record: dict) -> None:
        super().__init__()
        self.record = record

    def get(self, key, default=None):
        return {'vpt_mm_tuned': self.record}


def load_from_tuned(filename: str, map_location=None) -> dict:
    """mmengine ``CheckpointLoader`` scheme of ``*.safetensors`` paths.

    Used by every generic mmengine loader (``load_checkpoint``, the
    mmpretrain and mmseg inferencers). The file is verified
    (:func:`read_tuned`); its state dict carries the file's record, which
    :func:`check_tuned_source` (called by the prompted backbones' load
    pre-hook) uses to rebuild and verify the frozen backbone.
    """
    state, meta = read_tuned(filename)
    state = OrderedDict(state)
    state._metadata = _TunedMarker(dict(meta, filename=filename))
    info = dict(vpt_mm_tuned=filename)
    classes = recorded_task(meta)['classes']
    if classes is not None:  # what mmpretrain's inferencer labels with
        info['dataset_meta'] = dict(classes=classes)
    return dict(state_dict=state, meta=info)


class _CheckpointMarker(dict):
    """``state_dict._metadata`` of a vpt_mm training checkpoint read by
    mmengine's generic loader: each module's ``local_metadata`` is the saved
    one plus the checkpoint's name, so the load pre-hooks of vpt_mm's
    backbones and ``TunedClassifier`` check their keys strictly."""

    def __init__(self, metadata: Optional[dict], filename: str,
                 record: dict) -> None:
        super().__init__(metadata or {})
        self.filename = filename
        self.record = record

    def get(self, key, default=None):
        entry = dict(super().get(key, default) or {})
        entry['vpt_mm_checkpoint'] = self.filename
        entry['vpt_mm_readout'] = self.record.get('readout')
        if self.record.get('omits_frozen'):
            # The backbone comes from its pretrained checkpoint, as for a
            # tuned-only file (check_tuned_source).
            entry['vpt_mm_omits_frozen'] = True
            entry['vpt_mm_tuned'] = dict(
                filename=self.filename,
                backbone_fingerprint=self.record.get('backbone_fingerprint'))
        return entry


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
    tensors are refused, and the state dict is marked so that the modules
    of vpt_mm load it strictly (:func:`check_full_source`) even when the
    caller (e.g. mmpretrain's inferencer) loads non-strictly. Other files
    are returned unchanged.
    """
    checkpoint = _read_local(filename, map_location)
    if (isinstance(checkpoint, dict)
            and isinstance(checkpoint.get('meta'), dict)
            and checkpoint['meta'].get(CHECKPOINT_META_KEY)):
        verify_checkpoint(checkpoint, filename)
        state = checkpoint['state_dict']
        check_finite(state, filename)
        marked = OrderedDict(state)
        marked._metadata = _CheckpointMarker(
            getattr(state, '_metadata', None), filename,
            checkpoint['meta'][CHECKPOINT_META_KEY])
        checkpoint = dict(checkpoint, state_dict=marked)
    return checkpoint


def check_full_source(module: nn.Module, state: dict, prefix: str,
                      local_metadata: dict) -> None:
    """Load pre-hook: a vpt_mm training checkpoint read by a generic
    mmengine loader must fit ``module`` exactly (keys and shapes); one saved
    without its frozen backbone holds every key but those
    (:func:`frozen_keys`), which the backbone's own pre-hook
    (:func:`check_tuned_source`) loads from its pretrained checkpoint.

    Raises:
        ValueError: Naming the first key that does not fit.
    """
    source = local_metadata.get('vpt_mm_checkpoint') if local_metadata \
        else None
    if not source:
        return
    readout = local_metadata.get('vpt_mm_readout')
    if readout:
        check_task(dict(readout=readout), module, source)
    own = {k[len(prefix):]: v for k, v in state.items()
           if k.startswith(prefix)}
    expected = module.state_dict()
    if local_metadata.get('vpt_mm_omits_frozen'):
        omitted = frozen_keys(module)
        expected = {k: v for k, v in expected.items() if k not in omitted}
    _check_fits(expected, own,
                f'{source} does not fit {type(module).__name__}')


def check_whole_model(module: nn.Module, state: dict, prefix: str,
                      local_metadata: dict, *args) -> None:
    """Load pre-hook (``with_module``) of every model that holds a vpt_mm
    backbone (:func:`guard_whole_model`): a vpt_mm file read by a generic,
    non-strict mmengine loader (``load_checkpoint``, mmpretrain's
    ``ImageClassificationInferencer(cfg, pretrained=FILE)``) must fit the
    whole model, head included. mmengine would only print ``size mismatch
    for head.fc.weight`` and leave the config's random head in place.

    Raises:
        ValueError: Naming the first key that does not fit, or the readout
            the file was trained with.
    """
    if not local_metadata:
        return
    if local_metadata.get('vpt_mm_checkpoint'):
        check_full_source(module, state, prefix, local_metadata)
        return
    record = local_metadata.get('vpt_mm_tuned')
    if not record:
        return
    source = record.get('filename', 'tuned-only file')
    own = {k[len(prefix):]: v for k, v in state.items()
           if k.startswith(prefix)}
    check_task(recorded_task(record), module, source)
    _check_tuned_keys(tuned_state_dict(module), own, source)


def guard_whole_model(model: nn.Module) -> None:
    """Register :func:`check_whole_model` on ``model`` (once)."""
    if model.__dict__.get('_vpt_mm_whole_model_check'):
        return
    model.__dict__['_vpt_mm_whole_model_check'] = True
    model._register_load_state_dict_pre_hook(check_whole_model,
                                             with_module=True)


def check_tuned_source(backbone: nn.Module,
                       state: dict,
                       prefix: str,
                       local_metadata: dict,
                       init: Optional[Callable[[], None]] = None) -> None:
    """Load pre-hook of the prompted backbones: a tuned-only file loaded by
    a generic mmengine loader needs the backbone it was trained on.

    If the backbone is not that one and its ``init_cfg`` is a pretrained
    checkpoint that was not loaded yet (mmpretrain's ``get_model`` never
    initialises weights), the checkpoint is loaded first. The backbone's
    keys in the file must be exactly its tuned tensors.

    Args:
        backbone (nn.Module): The backbone being loaded.
        state (dict): The state dict being loaded.
        prefix (str): The backbone's key prefix in ``state``.
        local_metadata (dict): The backbone's load metadata.
        init (callable, optional): Loads the pretrained backbone; defaults
            to ``backbone.init_weights``.

    Raises:
        ValueError: On another backbone (naming both fingerprints) or a key
            that does not fit.
    """
    record = local_metadata.get('vpt_mm_tuned') if local_metadata else None
    if not record:
        return
    source = record.get('filename', 'tuned-only file')
    _check_prompt_meta({k[len(prefix):]: v for k, v in record.items()
                        if k.startswith(prefix)}, backbone, source)
    check_task(recorded_task(record), backbone, source)
    expected = tuned_state_dict(backbone)
    own = {k[len(prefix):]: v for k, v in state.items()
           if k.startswith(prefix)}
    _check_tuned_keys(expected, own, source)
    recorded = record.get('backbone_fingerprint')
    init_cfg = getattr(backbone, 'init_cfg', None)
    actual = frozen_fingerprint(backbone)
    if (actual != recorded and isinstance(init_cfg, dict)
            and init_cfg.get('type') == 'Pretrained'):
        (init or backbone.init_weights)()
        actual = frozen_fingerprint(backbone)
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
