"""What makes a number trustworthy: checksums, backbone fingerprints and RNG
state (files are written atomically by :mod:`vpt_mm.fileio`).

- :func:`digest` is the sha256 of a nested structure of tensors, numbers and
  strings (a state dict, an optimizer state). Checkpoints and tuned-only
  files written by vpt_mm record the digest of what they hold, so flipped
  bytes are found when they are loaded.
- :func:`backbone_fingerprint` is the digest of a backbone's frozen tensors:
  a tuned-only file records the fingerprint of the backbone it was trained
  on, and loading it onto another (or a random) backbone is an error. It is
  computed from the bytes every time (0.23 s for ViT-B on a 2-core CPU): a
  cache keyed on tensor addresses and version counters would miss writes
  through ``.data`` or numpy views and reused memory.
- :func:`rng_state` / :func:`set_rng_state` capture and restore every random
  number generator a training step draws from (python, numpy, torch, CUDA),
  so a resumed run continues the uninterrupted one bit for bit.
"""
from __future__ import annotations

import hashlib
import random
import warnings
from typing import Any, Dict, Iterable, Mapping

import numpy as np
import torch
import torch.nn as nn

__all__ = [
    'digest', 'file_sha256', 'backbone_fingerprint', 'check_finite',
    'rng_state',
    'set_rng_state'
]


def _update_tensor(h: 'hashlib._Hash', tensor: torch.Tensor) -> None:
    tensor = tensor.detach()
    if tensor.device.type != 'cpu':
        tensor = tensor.cpu()
    h.update(f'T{tensor.dtype}{tuple(tensor.shape)}'.encode())
    flat = tensor.contiguous().reshape(-1)
    if flat.numel():
        h.update(memoryview(flat.view(torch.uint8).numpy()))


def _update(h: 'hashlib._Hash', obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        _update_tensor(h, obj)
    elif isinstance(obj, np.ndarray):
        _update_tensor(h, torch.from_numpy(np.ascontiguousarray(obj)))
    elif isinstance(obj, Mapping):
        h.update(f'D{len(obj)}'.encode())
        for key in sorted(obj, key=repr):
            h.update(f'K{key!r}'.encode())
            _update(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f'L{len(obj)}'.encode())
        for item in obj:
            _update(h, item)
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes,
                                         np.generic, torch.dtype)):
        h.update(f'V{type(obj).__name__}:{obj!r}'.encode())
    else:
        raise TypeError(f'Cannot checksum an object of type '
                        f'{type(obj).__name__}')


def digest(obj: Any) -> str:
    """The sha256 (hex) of tensors, arrays and plain values, nested in dicts,
    lists and tuples. Dict keys are hashed in sorted order; tensors by dtype,
    shape and bytes (wherever they live), so the digest does not depend on
    the device or on insertion order.

    Args:
        obj: A state dict, an optimizer state dict, a list of RNG states...

    Returns:
        str: 64 hex digits.
    """
    h = hashlib.sha256()
    _update(h, obj)
    return h.hexdigest()


def file_sha256(path: str) -> str:
    """The sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 22), b''):
            h.update(block)
    return h.hexdigest()


def backbone_fingerprint(backbone: nn.Module,
                         exclude: Iterable[str] = ()) -> str:
    """The digest of a backbone's frozen tensors, from their bytes.

    Args:
        backbone (nn.Module): The backbone (its ``state_dict``: parameters
            and persistent buffers).
        exclude (Iterable[str]): Keys of ``backbone.state_dict()`` that are
            not frozen (prompts, tuned biases, adapters, ...).

    Returns:
        str: 64 hex digits.
    """
    exclude = set(exclude)
    state = {
        k: v
        for k, v in backbone.state_dict(keep_vars=True).items()
        if k not in exclude
    }
    return digest(state)


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse a state dict with NaN or infinite values.

    Raises:
        ValueError: Naming the first non-finite tensor of ``source``.
    """
    for key, value in state.items():
        if (isinstance(value, torch.Tensor) and value.is_floating_point()
                and not bool(torch.isfinite(value).all())):
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(
                f'{source}: {key!r} holds {bad} non-finite value(s) (NaN or '
                'inf); it comes from a diverged run and gives no meaningful '
                'number')


def rng_state() -> Dict[str, Any]:
    """Every random state a training step draws from, in plain types
    (loadable with ``torch.load(weights_only=True)``)."""
    version, keys, gauss = random.getstate()
    name, np_keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(
        python=[version, list(keys), gauss],
        numpy=dict(
            name=name,
            keys=torch.from_numpy(np_keys.astype(np.int64)),
            pos=int(pos),
            has_gauss=int(has_gauss),
            cached_gaussian=float(cached)),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _host_bytes(state: Any) -> torch.Tensor:
    """A generator state as the CPU ``uint8`` tensor torch's setters take,
    wherever a ``map_location`` put it (mmengine's resume maps a checkpoint
    to the run's device, so on a GPU the saved states arrive as CUDA
    tensors)."""
    return torch.as_tensor(state).detach().to('cpu', torch.uint8)


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured, whatever device the states
    were mapped to when the checkpoint was loaded.

    CUDA states are restored for the devices present; the states of devices
    this process does not see (a checkpoint from a machine with more GPUs
    visible) are left out with a warning, as are all of them where CUDA is
    not available.
    """
    version, keys, gauss = state['python']
    random.setstate((version, tuple(keys), gauss))
    np_state = state['numpy']
    np_keys = torch.as_tensor(np_state['keys']).detach().cpu()
    np.random.set_state(
        (np_state['name'], np_keys.numpy().astype(np.uint32),
         int(np_state['pos']), int(np_state['has_gauss']),
         float(np_state['cached_gaussian'])))
    torch.set_rng_state(_host_bytes(state['torch']))
    cuda = list(state.get('cuda') or [])
    present = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for index, cuda_state in enumerate(cuda[:present]):
        torch.cuda.set_rng_state(_host_bytes(cuda_state), index)
    if len(cuda) > present:
        warnings.warn(
            f'The RNG states of {len(cuda)} CUDA devices were saved; this '
            f'process sees {present}: the states of devices '
            f'{list(range(present, len(cuda)))} are not restored, so random '
            'numbers drawn on them differ from the uninterrupted run',
            stacklevel=2)


