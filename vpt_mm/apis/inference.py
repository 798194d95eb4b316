"""Classify images with tuned tasks: one frozen backbone, any number of
tasks, each from its tuned-only file, in mmpretrain's style.

- :func:`load_task_model`: the model of one task from a config (which
  decides the backbone) and a tuned-only ``.safetensors`` file (which
  decides the prompt length and prompted layers, the head's classes) or a
  training checkpoint; loaded strictly, the backbone's fingerprint checked.
- :class:`VPTInferencer`: several tasks (a task given several files is a
  prompt ensemble: their probabilities are averaged) over image files or
  arrays; tasks that can share the frozen backbone run together in mixed
  batches on it (:class:`~vpt_mm.apis.MultiTaskClassifier`), any other
  (protocols that change the backbone, pixel-space or prefix prompts,
  ``out_type='raw'``: :func:`~vpt_mm.apis.sharing_problem`) with a model of
  its own.
"""
from __future__ import annotations

import copy
import json
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config

from ..checkpoints import (
    frozen_keys,
    load_model_checkpoint,
    load_tuned,
    read_tuned,
)
from .multitask import MultiTaskClassifier, sharing_problem

__all__ = [
    'load_task_model', 'VPTInferencer', 'ImageReader', 'parse_task_args',
    'init_segmentor', 'copy_frozen_backbone'
]

ImageInput = Union[str, np.ndarray]


def _task_config(cfg: Config, name: str, state: Dict[str, torch.Tensor],
                 meta: dict) -> Config:
    """``cfg`` for one task: its benchmark task (or the head's class count
    from the file) and the file's prompt length and layers."""
    from ..config import apply_model_normalisation, apply_task
    from ..datasets import TASKS
    cfg = copy.deepcopy(cfg)
    apply_model_normalisation(cfg)
    if name in TASKS and cfg.get('task', None) is not None:
        apply_task(cfg, name)
    elif 'head.fc.weight' in state:
        cfg.model.head.num_classes = int(state['head.fc.weight'].shape[0])
    backbone = cfg.model.backbone
    if 'backbone.prompt.num_tokens' in meta and 'prompt_cfg' in backbone:
        prompt = dict(backbone.prompt_cfg)
        prompt['num_tokens'] = int(meta['backbone.prompt.num_tokens'])
        if 'backbone.prompt.layer_ids' in meta:
            ids = json.loads(meta['backbone.prompt.layer_ids'])
            prompt['layers'] = (ids[0] + 1, ids[-1] + 1)
        backbone.prompt_cfg = prompt
    return cfg


def load_task_model(cfg: Union[str, Config],
                    checkpoint: str,
                    name: str = '',
                    frozen_from: Optional[nn.Module] = None,
                    allow_other_backbone: bool = False) -> nn.Module:
    """The model of one task, loaded strictly and verified.

    Args:
        cfg (str | Config): The config (its backbone and pretrained
            checkpoint, its pipeline).
        checkpoint (str): A tuned-only ``.safetensors`` file (its prompt
            length and layers, and its head's class count, override the
            config's) or a training checkpoint (``.pth``, for exactly this
            config).
        name (str): A benchmark task name (the config is pointed at it, as
            ``--task`` does), or any name.
        frozen_from (nn.Module, optional): A model of the same config
            already holding the pretrained backbone: its frozen tensors are
            copied instead of reading the pretrained checkpoint again (the
            fingerprint is checked all the same).
        allow_other_backbone (bool): See :func:`~vpt_mm.load_tuned`.

    Returns:
        nn.Module: The model, in eval mode, with ``classes`` (class names,
        from the file or the task, else ``'0'``, ``'1'``, ...) and
        ``tuned_meta`` (a tuned-only file's verified metadata; ``{}`` for a
        training checkpoint).
    """
    from mmengine.registry import MODELS

    from ..config import config_from_file
    if isinstance(cfg, str):
        cfg = config_from_file(cfg)
    from ..datasets import TASKS
    classes = None
    # A benchmark task name is what the file must have been trained on;
    # any other name is a label (the file decides the head).
    expected = dict(task=name) if name in TASKS else None
    if str(checkpoint).endswith('.safetensors'):
        state, meta = read_tuned(checkpoint)
        cfg = _task_config(cfg, name, state, meta)
        model = MODELS.build(cfg.model)
        if frozen_from is None:
            model.init_weights()
        else:
            copy_frozen_backbone(frozen_from, model)
        load_tuned(model, checkpoint, allow_other_backbone, expected)
        if 'classes' in meta:
            classes = json.loads(meta['classes'])
    else:
        model = MODELS.build(_task_config(cfg, name, {}, {}).model)
        meta = load_model_checkpoint(model, checkpoint,
                                     allow_other_backbone, expected)
        classes = (meta.get('dataset_meta') or {}).get('classes')
    num_classes = getattr(getattr(model, 'head', None), 'num_classes', None)
    if classes is None and num_classes is not None:
        classes = [str(i) for i in range(num_classes)]
    model.classes = list(classes or [])
    model.tuned_meta = meta if str(checkpoint).endswith('.safetensors') \
        else {}
    return model.eval()


def init_segmentor(config: Union[str, Config],
                   checkpoint: str,
                   device: str = 'cpu',
                   allow_other_backbone: bool = False) -> nn.Module:
    """mmseg's ``init_model`` for a tuned task: the segmentor of
    ``config`` with ``checkpoint`` (a tuned-only file on the config's
    pretrained backbone, or a training checkpoint) loaded strictly and
    verified, ready for mmseg's ``inference_model(model, img)``.

    Returns:
        nn.Module: The segmentor in eval mode, with ``cfg`` and
        ``dataset_meta`` (the config's test dataset's classes and palette),
        as mmseg's ``init_model`` leaves it.
    """
    from mmengine.registry import DATASETS

    from ..config import config_from_file
    cfg = config_from_file(config) if isinstance(config, str) else config
    model = load_task_model(cfg, checkpoint,
                            allow_other_backbone=allow_other_backbone)
    model.cfg = cfg
    dataset = (cfg.get('test_dataloader') or {}).get('dataset', {})
    dataset_cls = None
    if dataset:
        with DATASETS.switch_scope_and_registry(
                cfg.get('default_scope', None)) as registry:
            dataset_cls = registry.get(dataset.get('type'))
    model.dataset_meta = dict(getattr(dataset_cls, 'METAINFO', {}) or {})
    return model.to(device).eval()


def copy_frozen_backbone(source: nn.Module, target: nn.Module) -> None:
    """Copy the frozen backbone tensors of ``source`` into ``target`` (a
    model of the same backbone config), e.g. to give many task models one
    pretrained backbone without reading its checkpoint again.

    Raises:
        ValueError: If ``source`` lacks some of them.
    """
    keys = frozen_keys(target)
    state = {k: v for k, v in source.state_dict().items() if k in keys}
    missing = keys - set(state)
    if missing:
        raise ValueError(f'{sorted(missing)[:3]} are not in the shared '
                         'backbone: the tasks need the same config backbone')
    target.load_state_dict(state, strict=False)


def parse_task_args(items: Sequence[str]) -> Dict[str, List[str]]:
    """``NAME=FILE[,FILE...]`` arguments as ``{name: [files]}``.

    Raises:
        ValueError: On a malformed or repeated item, or a missing file.
    """
    tasks: Dict[str, List[str]] = {}
    for item in items:
        name, sep, files = item.partition('=')
        if not sep or not name or not files:
            raise ValueError(f'--task {item!r}: expected NAME=FILE or '
                             'NAME=FILE1,FILE2,... (an ensemble)')
        if name in tasks:
            raise ValueError(f'--task {name!r} is given twice')
        paths = [f for f in files.split(',') if f]
        for path in paths:
            if not osp.isfile(path):
                raise FileNotFoundError(f'--task {name}: {path} does not '
                                        'exist')
        tasks[name] = paths
    return tasks


def _name(item: ImageInput, index: int) -> str:
    """An input as messages name it."""
    return f'image {item}' if isinstance(item, str) else \
        f'input array {index}'


class ImageReader:
    """A config's test pipeline for single images: a path, an array, or an
    encoded image's bytes (as a server receives them), decoded the way the
    pipeline's ``LoadImageFromFile`` decodes files, so each gives the same
    input tensor; non-finite pixels are refused.

    Args:
        cfg (Config): The config (its ``test_dataloader`` pipeline).
    """

    def __init__(self, cfg: Config) -> None:
        from mmengine.dataset import Compose
        loader = cfg.get('test_dataloader', None) or {}
        dataset = loader.get('dataset', {})
        while 'pipeline' not in dataset and 'dataset' in dataset:
            dataset = dataset['dataset']
        steps = list(dataset.get('pipeline', [dict(type='PackInputs')]))
        self.reads_files = bool(steps) and steps[0].get('type') in (
            'LoadImageFromFile', 'mmpretrain.LoadImageFromFile')
        self.load_step = dict(steps[0]) if self.reads_files else {}
        self._from_array = Compose(steps[1:] if self.reads_files else steps)
        self._from_file = Compose(steps)

    def decode(self, data: bytes, name: str = 'the image') -> np.ndarray:
        """Decode an encoded image (JPEG, PNG, ...) as the pipeline's
        ``LoadImageFromFile`` decodes a file of those bytes (its
        ``imdecode_backend``, ``color_type`` and ``to_float32``), or a
        ``.npy`` array.

        Raises:
            ValueError: For empty or undecodable bytes, naming ``name``.
        """
        import io

        import mmcv
        if not data:
            raise ValueError(f'{name} is empty')
        if data[:6] == b'\x93NUMPY':
            try:
                return np.load(io.BytesIO(data), allow_pickle=False)
            except Exception as err:
                raise ValueError(f'{name} is not a readable .npy array: '
                                 f'{err}') from err
        step = self.load_step
        try:
            img = mmcv.imfrombytes(
                data, flag=step.get('color_type', 'color'),
                backend=step.get('imdecode_backend', 'cv2'))
        except Exception as err:
            reason = re.sub(r' <[^>]*>', '', str(err))  # no object reprs
            raise ValueError(f'{name} cannot be decoded as an image '
                             f'({reason})') from err
        if img is None:
            raise ValueError(f'{name} cannot be decoded as an image')
        return img.astype(np.float32) if step.get('to_float32') else img

    def prepare(self, item: ImageInput, index: int = 0) -> dict:
        """One input through the pipeline; refused if its pixels are not
        finite, before any transform (a resize or a cast could spread or
        hide them) and after (a reader of float images)."""
        raw_bad = (isinstance(item, np.ndarray)
                   and np.issubdtype(item.dtype, np.floating)
                   and not np.isfinite(item).all())
        data = None if raw_bad else self._read(item)
        inputs = None if data is None else data['inputs']
        if raw_bad or (isinstance(inputs, torch.Tensor)
                       and inputs.is_floating_point()
                       and not bool(torch.isfinite(inputs).all())):
            raise ValueError(
                f'{_name(item, index)} has non-finite pixel values (NaN or '
                'inf): no score of it would mean anything')
        return data

    def _read(self, item: ImageInput) -> dict:
        if isinstance(item, np.ndarray):
            if item.ndim not in (2, 3) or item.size == 0:
                raise ValueError(f'An image array must be HxW or HxWxC, got '
                                 f'shape {item.shape}')
            return self._from_array(
                dict(img=item, img_shape=item.shape[:2],
                     ori_shape=item.shape[:2]))
        if not self.reads_files:
            raise ValueError(
                "This config's test pipeline reads no image files (it takes "
                'arrays, as its dataset gives them); pass numpy arrays')
        if not osp.isfile(item):
            raise FileNotFoundError(f'Image {item} does not exist')
        try:
            return self._from_file(dict(img_path=item))
        except Exception as err:
            raise ValueError(f'Cannot read image {item}: {err}') from err


class VPTInferencer:
    """Classify images with several tuned tasks on one backbone.

    Args:
        config (str | Config): The config of the tasks' backbone.
        tasks (dict): Task name -> a file or a list of files (a prompt
            ensemble of that task, e.g. several seeds).
        device (str): ``'cpu'`` or ``'cuda'``.
        allow_other_backbone (bool): See :func:`~vpt_mm.load_tuned`.

    Example:
        Needs the config's pretrained checkpoint and a tuned file (not run
        as a doctest; ``tests/test_apis/test_inference.py`` runs it on
        files it makes):

        >>> inferencer = VPTInferencer(  # doctest: +SKIP
        ...     'configs/vtab/vpt_deep_vit-b.py',
        ...     dict(dmlab='dmlab.safetensors'))
        >>> inferencer(['a.jpg'])[0]['dmlab']['pred_class']  # doctest: +SKIP
    """

    def __init__(self,
                 config: Union[str, Config],
                 tasks: Dict[str, Union[str, Sequence[str]]],
                 device: str = 'cpu',
                 allow_other_backbone: bool = False) -> None:
        from ..config import config_from_file
        cfg = config_from_file(config) if isinstance(config, str) else config
        if not tasks:
            raise ValueError('VPTInferencer needs at least one task')
        self.cfg = cfg
        self.device = torch.device(device)
        self.members: Dict[str, List[str]] = {}
        models: Dict[str, nn.Module] = {}
        first = None
        for name, files in tasks.items():
            files = [files] if isinstance(files, str) else list(files)
            if not files:
                raise ValueError(f'Task {name!r} has no file')
            self.members[name] = []
            for k, path in enumerate(files):
                model = load_task_model(cfg, path, name, first,
                                        allow_other_backbone)
                first = first or model
                member = name if len(files) == 1 else f'{name}#{k}'
                models[member] = model
                self.members[name].append(member)
            classes = {tuple(models[m].classes) for m in self.members[name]}
            if len(classes) != 1:
                raise ValueError(f'The files of task {name!r} have other '
                                 f'classes: {sorted(classes)}')
        self.classes = {n: models[m[0]].classes
                        for n, m in self.members.items()}
        shared = {m: model for m, model in models.items()
                  if sharing_problem(model) is None}
        alone = {m: model for m, model in models.items() if m not in shared}
        self.server = MultiTaskClassifier(shared).to(
            self.device) if shared else None
        self.alone = {m: model.to(self.device) for m, model in alone.items()}
        self.preprocessor = first.data_preprocessor.to(self.device)
        self.reader = ImageReader(cfg)

    @torch.no_grad()
    def probabilities(self, inputs: Sequence[ImageInput],
                      batch_size: int = 32) -> Dict[str, torch.Tensor]:
        """Per task, the (N, num_classes) class probabilities (ensembles:
        the mean over their members)."""
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        members = [m for ms in self.members.values() for m in ms]
        probs: Dict[str, List[torch.Tensor]] = {m: [] for m in members}
        for start in range(0, len(inputs), batch_size):
            data = [self.reader.prepare(x, start + i) for i, x in enumerate(
                inputs[start:start + batch_size])]
            batch = self.preprocessor(
                dict(inputs=[d['inputs'] for d in data],
                     data_samples=[d['data_samples'] for d in data]),
                False)['inputs']
            if self.server is not None:
                names = self.server.task_names
                images = batch.repeat(len(names), 1, 1, 1)
                tasks = [t for t in range(len(names))
                         for _ in range(len(batch))]
                scores = self.server(images, tasks)
                for t, member in enumerate(names):
                    probs[member].append(torch.stack(
                        scores[t * len(batch):(t + 1) * len(batch)]))
            for member, model in self.alone.items():
                probs[member].append(
                    model(batch, mode='tensor').softmax(-1))
        out = {
            name: torch.stack([torch.cat(probs[m]) for m in ms]).mean(0)
            for name, ms in self.members.items()
        }
        for name, p in out.items():
            bad = (~torch.isfinite(p).all(dim=1)).nonzero().flatten()
            if len(bad):
                i = int(bad[0])
                raise FloatingPointError(
                    f'Task {name!r} gave non-finite scores for '
                    f'{_name(inputs[i], i)} ({len(bad)} image(s) in all): '
                    'the model overflowed (half precision?) or its weights '
                    'are not finite')
        return out

    def __call__(self, inputs: Sequence[ImageInput],
                 batch_size: int = 32) -> List[Dict[str, dict]]:
        """Classify images (paths or arrays) with every task.

        Returns:
            list[dict]: Per image, ``{task: {pred_label, pred_class,
            pred_scores}}``.
        """
        probs = self.probabilities(inputs, batch_size)
        results = []
        for i in range(len(inputs)):
            row = {}
            for name, p in probs.items():
                scores = p[i].float().cpu()
                label = int(scores.argmax())
                row[name] = dict(pred_label=label,
                                 pred_class=self.classes[name][label],
                                 pred_scores=scores.tolist())
            results.append(row)
        return results
