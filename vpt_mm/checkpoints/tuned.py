"""Tuned-only files: a task's tuned tensors in a safetensors file, with
their sha256 and the fingerprint of the frozen backbone they were trained
on; written, read and loaded strictly."""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..fileio import atomic_save
from ..integrity import check_finite, digest
from .records import (
    _check_fingerprint,
    _check_prompt_meta,
    _prompt_meta,
    check_task,
    frozen_fingerprint,
    readout_of,
    recorded_task,
    tuned_state_dict,
)
from .strict import _named_tensors

#: Format of tuned-only files. v1 files (no checksum, no backbone
#: fingerprint) are refused: re-extract them from their training checkpoint.
TUNED_FORMAT = 'vpt_mm.tuned.v2'


def save_tuned(model: nn.Module,
               filename: str,
               classes: Optional[Sequence[str]] = None,
               task: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Save only the tuned tensors of ``model`` to a safetensors file.

    The file's metadata records the sha256 of the tensors, the fingerprint
    of the frozen backbone they were trained on, each prompt module's
    length, width, location and prompted layers, the readout
    (:func:`readout_of`), and the task and class names if given; the file
    is written to a temporary name and renamed, so it is complete or
    absent.

    Args:
        model (nn.Module): Usually an mmpretrain ``ImageClassifier`` or an
            mmseg ``EncoderDecoder`` with a prompted backbone, its backbone
            being the one the tuned tensors were trained on.
        filename (str): Output path, conventionally ``*.safetensors``.
        classes (Sequence[str], optional): Class names of the task, in
            label order (``tools/infer.py`` reports them).
        task (str, optional): The benchmark task it was trained on.

    Returns:
        dict: The tensors written.
    """
    from safetensors.torch import save_file

    state = {
        k: v.contiguous().cpu()
        for k, v in tuned_state_dict(model).items()
    }
    if not state:
        raise ValueError('The model has no trainable parameter to save')
    check_finite(state, 'save_tuned')
    meta = dict(
        format=TUNED_FORMAT,
        sha256=digest(state),
        backbone_fingerprint=frozen_fingerprint(model),
        readout=json.dumps(readout_of(model)),
        **_prompt_meta(model))
    if classes is not None:
        meta['classes'] = json.dumps([str(c) for c in classes])
    if task is not None:
        meta['task'] = str(task)

    def write(tmp: str) -> None:
        save_file(state, tmp, metadata=meta)
        # safetensors creates its file with mode 0600; use the usual mode
        # (0666 less the umask), as any other file the tools write.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)

    atomic_save(filename, write)
    return state


def read_tuned(filename: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Read a tuned-only file and verify it: format, sha256 of its tensors,
    finite values.

    Returns:
        tuple: The tensors and the file's metadata.

    Raises:
        ValueError: Naming what is wrong with the file.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not os.path.isfile(filename):
        raise FileNotFoundError(f'Tuned-only file {filename} does not exist')
    try:
        with safe_open(filename, framework='pt') as f:
            meta = f.metadata() or {}
        state = load_file(filename)
    except Exception as err:  # the header itself is damaged
        raise ValueError(f'{filename} is not a readable safetensors file: '
                         f'{err}') from err
    if meta.get('format') == 'vpt_mm.tuned.v1':
        raise ValueError(
            f'{filename} was written by an older vpt_mm without a checksum '
            'or backbone fingerprint; extract it again from its training '
            'checkpoint with tools/model_converters/extract_tuned.py')
    if meta.get('format') != TUNED_FORMAT:
        raise ValueError(f'{filename} is not a vpt_mm tuned-tensor file '
                         f'(format {meta.get("format")!r})')
    actual = digest(state)
    if actual != meta.get('sha256'):
        raise ValueError(
            f'{filename} is corrupted: its tensors hash to sha256 '
            f'{actual[:16]}..., the file records {meta.get("sha256")!r:.19}')
    check_finite(state, filename)
    return state, meta


def _check_tuned_keys(expected: Dict[str, torch.Tensor],
                      state: Dict[str, torch.Tensor], source: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f'{source} does not fit the model: missing {missing[:5]}, '
            f'unexpected {unexpected[:5]}')
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f'{source}: {key!r} has shape {tuple(value.shape)}, the '
                f'model expects {tuple(expected[key].shape)}')


def load_tuned(model: nn.Module,
               filename: str,
               allow_other_backbone: bool = False,
               task: Optional[dict] = None,
               allow_other_task: bool = False) -> dict:
    """Load a tuned-only safetensors file strictly onto ``model``.

    The file must hold exactly the model's tuned tensors (see
    :func:`tuned_state_dict`) with the same shapes (a prompt file for
    another prompt length or width is reported as such), its tensors must
    match their recorded sha256, and the model's frozen backbone must be the
    one the file was trained on (same fingerprint).

    Args:
        model (nn.Module): A freshly built model with its pretrained
            backbone loaded.
        filename (str): A file written by :func:`save_tuned`.
        allow_other_backbone (bool): Load onto a backbone with another
            fingerprint (a deliberate transfer), with a warning instead of
            an error. Defaults to False.
        task (dict, optional): The run's task and classes
            (:func:`check_task`); the readout is always checked.
        allow_other_task (bool): See :func:`check_task`.

    Returns:
        dict: The file's metadata.
    """
    state, meta = read_tuned(filename)
    _check_prompt_meta(meta, model, filename)
    check_task(recorded_task(meta), model, filename, task, allow_other_task)
    expected = tuned_state_dict(model)
    _check_tuned_keys(expected, state, filename)
    _check_fingerprint(meta.get('backbone_fingerprint'),
                       frozen_fingerprint(model), filename,
                       allow_other_backbone)
    with torch.no_grad():
        for key, tensor in _named_tensors(model, expected).items():
            tensor.copy_(state[key])
    return meta
