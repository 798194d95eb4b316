"""Writing files: every file vpt_mm writes appears complete or not at all.

:func:`atomic_file` is the one writer (a temporary file next to the target,
fsynced and renamed onto it); :func:`atomic_save`, :func:`atomic_write_text`
and :func:`write_json` are that writer for a save function, a text and a
JSON document.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from contextlib import contextmanager
from typing import IO, Any, Callable, Iterator


@contextmanager
def atomic_file(path: str, mode: str = 'w', **kwargs) -> Iterator[IO]:
    """Open a file that appears at ``path`` only once it is complete.

    What is written goes to a temporary file next to ``path`` (named after
    this process, so concurrent writers never share one), which is flushed,
    fsynced and renamed onto ``path`` when the block ends; if the block
    raises (or the process is killed), ``path`` keeps its previous version
    and the temporary file is removed (or left, never read). This is the
    one writer of every file vpt_mm writes.

    Args:
        path (str): The file.
        mode (str): ``'w'`` or ``'wb'``.
        **kwargs: More arguments of :func:`open` (``newline``, ...).
    """
    with _replacing(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def atomic_save(path: str, save: Callable[[str], Any]) -> None:
    """Write ``path`` with a function that writes to a path it is given
    (``torch.save``, safetensors' ``save_file``, ``fig.savefig``), atomically
    as :func:`atomic_file`: ``save`` writes a temporary file, which is then
    fsynced and renamed onto ``path``."""
    with _replacing(path) as tmp:
        save(tmp)


@contextmanager
def _replacing(path: str) -> Iterator[str]:
    """A temporary path next to ``path`` (named after this process), made
    to replace ``path`` (fsync, rename) when the block ends without error;
    removed in any case."""
    tmp = f'{path}.tmp{os.getpid()}'
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    try:
        yield tmp
        atomic_replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(text)


def atomic_replace(tmp: str, path: str) -> None:
    """Make the complete file ``tmp`` appear as ``path`` (fsync, rename)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _json_scalar(value: object) -> object:
    """numpy / torch scalars (e.g. mmseg's metrics) as Python numbers."""
    if hasattr(value, 'item'):
        return value.item()
    raise TypeError(f'{type(value).__name__} is not JSON serializable')


def write_json(obj: object, path: str) -> None:
    """Write ``obj`` as json atomically: the file is complete or absent."""
    atomic_write_text(
        path, json.dumps(obj, indent=2, default=_json_scalar) + '\n')
