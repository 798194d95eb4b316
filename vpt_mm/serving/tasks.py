"""The tasks a server holds: every tuned-only file of a folder, loaded as
``tools/test.py`` loads it, on one frozen backbone.

:class:`TaskFolder` scans the folder (:meth:`TaskFolder.refresh`): a new
file is loaded, a removed one unloaded, a replaced one (other bytes)
loaded again; a file that is not a valid tuned file for this backbone
(another backbone's fingerprint, damaged bytes, a half-copied file, a
readout the config does not have) is rejected with the reason and never
served. Each refresh that changes anything publishes a new
:class:`TaskSet`, an immutable snapshot; a request keeps the snapshot it
was checked against until its batch has run, so tasks come and go without
failing requests in flight.

Frozen tensors are shared: each task's model points its frozen backbone
tensors at the server's one copy (after its fingerprint has been checked),
so a task costs its tuned tensors only.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import os.path as osp
import threading
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log

from ..apis import MultiTaskClassifier, load_task_model, sharing_problem
from ..checkpoints import frozen_fingerprint, frozen_keys
from ..integrity import file_sha256

__all__ = ['TaskFolder', 'TaskSet', 'TaskInfo']


@dataclass(frozen=True)
class TaskInfo:
    """What ``GET /v1/tasks`` says about one loaded task."""

    name: str
    file: str
    sha256: str
    classes: Tuple[str, ...]
    num_tokens: Optional[int]
    layers: Optional[Tuple[int, ...]]
    backbone_fingerprint: str

    def as_dict(self) -> dict:
        """JSON form (layers 1-based, as ``prompt_cfg.layers`` counts)."""
        return dict(name=self.name, file=self.file, sha256=self.sha256,
                    classes=list(self.classes), num_tokens=self.num_tokens,
                    layers=list(self.layers) if self.layers else None,
                    backbone_fingerprint=self.backbone_fingerprint)


@dataclass(frozen=True)
class TaskSet:
    """One immutable snapshot of the served tasks.

    Attributes:
        version (int): Increases with every change of the folder.
        classifier (MultiTaskClassifier, optional): All tasks on the shared
            backbone (None without tasks).
        tasks (dict): Task name -> :class:`TaskInfo`.
        rejected (dict): File -> why it is not served.
    """

    version: int
    classifier: Optional[MultiTaskClassifier]
    tasks: Dict[str, TaskInfo]
    rejected: Dict[str, str] = field(default_factory=dict)

    def index(self, name: str) -> int:
        """The classifier's index of a task."""
        return self.classifier.task_index(name)


class TaskFolder:
    """The tuned-only files of a folder as served tasks.

    Args:
        cfg (Config): The tasks' config (backbone, pretrained checkpoint,
            pipeline), resolved.
        folder (str): The folder of ``*.safetensors`` files; a task is named
            after its file (``dmlab.safetensors`` serves ``dmlab``).
        device (str): Where the models run.
    """

    def __init__(self, cfg: Config, folder: str, device: str = 'cpu') -> None:
        from mmengine.registry import MODELS
        if not osp.isdir(folder):
            raise FileNotFoundError(f'Tasks folder {folder} does not exist')
        self.cfg = cfg
        self.folder = folder
        self.device = torch.device(device)
        # The one frozen backbone: the config's model with its pretrained
        # checkpoint. Every task's fingerprint must be this one's.
        self.base = MODELS.build(cfg.model)
        self.base.init_weights()
        self.base.eval()
        self.fingerprint = frozen_fingerprint(self.base)
        self._frozen_keys = set(frozen_keys(self.base))
        self.base.to(self.device)
        self._models: Dict[str, nn.Module] = {}
        self._info: Dict[str, TaskInfo] = {}
        self._seen: Dict[str, Tuple[float, int]] = {}
        self._rejected: Dict[str, str] = {}
        self._lock = threading.Lock()
        self._version = 0
        self.current = TaskSet(0, None, {}, {})

    def _load(self, path: str, name: str) -> Tuple[nn.Module, TaskInfo]:
        """Load one file strictly on the shared backbone (the fingerprint
        checked), its frozen tensors then pointed at the shared copy."""
        model = load_task_model(self.cfg, path, name, frozen_from=self.base)
        meta = model.tuned_meta
        problem = sharing_problem(model)
        if problem:
            raise ValueError(f'it cannot share the backbone: {problem}')
        shared = self.base.state_dict()
        with torch.no_grad():
            for key, tensor in model.state_dict(keep_vars=True).items():
                if key in self._frozen_keys:
                    tensor.data = shared[key].data
        ids = meta.get('backbone.prompt.layer_ids')
        tokens = meta.get('backbone.prompt.num_tokens')
        info = TaskInfo(
            name=name, file=osp.basename(path), sha256=file_sha256(path),
            classes=tuple(model.classes),
            num_tokens=int(tokens) if tokens is not None else None,
            layers=tuple(i + 1 for i in json.loads(ids)) if ids else None,
            backbone_fingerprint=meta.get('backbone_fingerprint', ''))
        return model.to(self.device).eval(), info

    def refresh(self) -> TaskSet:
        """Scan the folder once; publish and return the new snapshot if
        anything changed (the current one otherwise)."""
        with self._lock:
            files = {osp.splitext(osp.basename(p))[0]: p for p in sorted(
                glob.glob(osp.join(self.folder, '*.safetensors')))}
            changed = False
            for name in list(self._seen):
                if name not in files:  # removed
                    self._seen.pop(name)
                    self._models.pop(name, None)
                    self._info.pop(name, None)
                    self._rejected.pop(name, None)
                    changed = True
            for name, path in files.items():
                try:
                    stat = os.stat(path)
                except FileNotFoundError:  # removed while scanning
                    continue
                key = (stat.st_mtime, stat.st_size)
                if self._seen.get(name) == key:
                    continue
                self._seen[name] = key
                changed = True
                try:
                    model, info = self._load(path, name)
                except Exception as err:  # noqa: BLE001 (reported, not served)
                    self._models.pop(name, None)
                    self._info.pop(name, None)
                    self._rejected[name] = str(err)
                    print_log(f'Not serving {path}: {err}', logger='current',
                              level=logging.WARNING)
                    continue
                self._rejected.pop(name, None)
                self._models[name] = model
                self._info[name] = info
            if changed:
                self._version += 1
                models = dict(self._models)
                classifier = MultiTaskClassifier(models).to(self.device) \
                    if models else None
                self.current = TaskSet(
                    self._version, classifier, dict(self._info),
                    {f'{n}.safetensors': r
                     for n, r in self._rejected.items()})
            return self.current
