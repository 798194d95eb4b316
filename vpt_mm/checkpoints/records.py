"""What a file records and what a model is: tuned tensors, readout, task,
frozen keys and the frozen backbone's fingerprint, the checks between them,
and how a file's record travels with its state dict into a load
(:func:`attach_file_record`)."""
from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Dict, Optional

import torch
import torch.nn as nn

from ..integrity import backbone_fingerprint
from ..prompts import (
    PromptModule,
    prompt_parameter_names,
)

#: Key of vpt_mm's integrity record in a training checkpoint's ``meta``.
CHECKPOINT_META_KEY = 'vpt_mm'


def tuned_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The tensors a task needs on top of the frozen backbone.

    Every parameter with ``requires_grad=True`` and every prompt parameter
    (frozen prompts too: a "prompt-fixed" task needs its random prompts),
    plus the persistent buffers (e.g. BatchNorm statistics) of modules that
    own such a parameter.
    """
    prompt_keys = prompt_parameter_names(model)
    state = {}
    for mod_name, module in model.named_modules():
        prefix = f'{mod_name}.' if mod_name else ''
        own = list(module.named_parameters(recurse=False))
        trainable = [(n, p) for n, p in own
                     if p.requires_grad or prefix + n in prompt_keys]
        for name, param in trainable:
            state[prefix + name] = param.detach()
        if trainable:
            for name, buf in module.named_buffers(recurse=False):
                if name not in module._non_persistent_buffers_set:
                    state[prefix + name] = buf.detach()
    return state


def _prompt_meta(model: nn.Module) -> Dict[str, str]:
    meta = {}
    for name, module in model.named_modules():
        if isinstance(module, PromptModule):
            meta[f'{name}.num_tokens'] = str(module.num_tokens)
            meta[f'{name}.embed_dims'] = str(module.embed_dims)
            meta[f'{name}.location'] = module.location
            if hasattr(module, 'layer_ids'):
                meta[f'{name}.layer_ids'] = json.dumps(
                    [int(i) for i in module.layer_ids])
    return meta


def _check_prompt_meta(meta: dict, model: nn.Module, source: str) -> None:
    model_meta = _prompt_meta(model)
    for key in sorted(set(meta) & set(model_meta)):
        if meta[key] != model_meta[key]:
            name, attr = key.rsplit('.', 1)
            raise ValueError(
                f'{source} was saved for {attr}={meta[key]} at {name!r}, '
                f'but the model has {attr}={model_meta[key]}')


def _backbone_of(model: nn.Module) -> nn.Module:
    """The backbone of a classifier / segmentor; a bare backbone is its
    own."""
    backbone = getattr(model, 'backbone', None)
    return backbone if isinstance(backbone, nn.Module) else model


#: Backbone options that decide what the head reads. A head trained on one
#: readout scores garbage on another, so files record them and every loader
#: refuses a model that differs.
READOUT_OPTIONS = ('out_type', 'out_indices', 'final_norm', 'with_cls_token',
                   'prompt_merging', 'out_after_downsample')


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, 'item'):
        return value.item()
    return value


def readout_of(model: nn.Module) -> Dict[str, object]:
    """The options of ``model`` that decide what its head reads: those of
    :data:`READOUT_OPTIONS` its backbone has, and the neck's type."""
    backbone = _backbone_of(model)
    readout = {name: _plain(getattr(backbone, name))
               for name in READOUT_OPTIONS if hasattr(backbone, name)}
    if backbone is not model and getattr(model, 'neck', None) is not None:
        readout['neck'] = type(model.neck).__name__
    return readout


def task_of(cfg) -> Dict[str, object]:
    """What a run of ``cfg`` expects a file to have been trained on: its
    benchmark ``task`` (None if it selects none)."""
    return dict(task=cfg.get('task', None))


def recorded_task(meta: dict) -> Dict[str, object]:
    """The task, classes and readout a file records: a tuned-only file's
    metadata (JSON strings) or a training checkpoint's ``meta``."""
    record = meta.get(CHECKPOINT_META_KEY)
    if isinstance(record, dict):  # a training checkpoint
        return dict(task=record.get('task'),
                    classes=(meta.get('dataset_meta') or {}).get('classes'),
                    readout=record.get('readout'))
    return dict(
        task=meta.get('task'),
        classes=json.loads(meta['classes']) if 'classes' in meta else None,
        readout=json.loads(meta['readout']) if 'readout' in meta else None)


def check_task(recorded: dict,
               model: Optional[nn.Module],
               source: str,
               expected: Optional[dict] = None,
               allow_other_task: bool = False) -> None:
    """Refuse a file trained on another task or read out another way.

    Args:
        recorded (dict): :func:`recorded_task` of the file.
        model (nn.Module, optional): The model it is loaded into; its
            :func:`readout_of` must equal the recorded one (options both
            know).
        source (str): The file, for messages.
        expected (dict, optional): ``task`` and/or ``classes`` of the run
            (None or absent: not known).
        allow_other_task (bool): Load a file of another task (a deliberate
            transfer) with a warning instead of an error.

    Raises:
        ValueError: Naming both readouts, tasks or class lists.
    """
    if model is not None and recorded.get('readout'):
        own = readout_of(model)
        for key, value in sorted(recorded['readout'].items()):
            if key in own and _plain(own[key]) != value:
                raise ValueError(
                    f'{source} was trained with {key}={value!r}, but the '
                    f'model has {key}={own[key]!r}: its head reads other '
                    f'features; build the model with {key}={value!r}')
    expected = expected or {}
    problems = []
    for key in ('task', 'classes'):
        ours, theirs = expected.get(key), recorded.get(key)
        if ours is None or theirs is None:
            continue
        if key == 'classes':
            ours, theirs = [str(c) for c in ours], [str(c) for c in theirs]
            if ours != theirs:
                problems.append(f'the {len(theirs)} classes {theirs[:4]}..., '
                                f'but this run has the {len(ours)} classes '
                                f'{ours[:4]}...')
        elif ours != theirs:
            problems.append(f'task {theirs!r}, but this run selects task '
                            f'{ours!r}')
    if not problems:
        return
    msg = f'{source} was trained on ' + '; '.join(problems)
    if not allow_other_task:
        raise ValueError(
            msg + '. Select the task the file was trained on (--task), or '
            'pass allow_other_task (tools/test.py --allow-other-task) to '
            'evaluate it on another task deliberately')
    from mmengine.logging import print_log
    print_log(msg + '; loading anyway (allow_other_task)', logger='current',
              level=logging.WARNING)


def frozen_keys(model: nn.Module) -> set:
    """Keys of ``model.state_dict()`` holding its backbone's frozen tensors:
    exactly what :func:`frozen_fingerprint` covers, and what a small
    training checkpoint (:func:`omit_frozen`) leaves out."""
    backbone = _backbone_of(model)
    prefix = '' if backbone is model else 'backbone.'
    tuned = tuned_state_dict(backbone)
    return {prefix + k for k in backbone.state_dict() if k not in tuned}


def _omitted_keys(model: nn.Module) -> set:
    """What a small checkpoint leaves out: :func:`frozen_keys`, or nothing
    if no parameter is frozen (full fine-tuning)."""
    frozen = frozen_keys(model)
    if not frozen & {name for name, _ in model.named_parameters()}:
        return set()
    return frozen


def frozen_fingerprint(model: nn.Module) -> str:
    """Fingerprint of the frozen tensors of ``model``'s backbone: everything
    in its state dict that a tuned-only file does not hold (see
    :func:`~vpt_mm.integrity.backbone_fingerprint`)."""
    backbone = _backbone_of(model)
    return backbone_fingerprint(backbone, tuned_state_dict(backbone))


def _check_fingerprint(recorded: Optional[str], actual: str, source: str,
                       allow_other_backbone: bool) -> None:
    if recorded == actual:
        return
    msg = (f'{source} was trained on the frozen backbone with fingerprint '
           f'{recorded}, but the model\'s backbone has fingerprint {actual}:'
           ' another pretrained checkpoint, a different conversion, or no '
           'pretrained weights at all (init_cfg=None)')
    if not allow_other_backbone:
        raise ValueError(
            msg + '. Load the backbone the file was trained on, or pass '
            'allow_other_backbone (tools/test.py --allow-other-backbone) to '
            'transfer the tuned tensors deliberately')
    from mmengine.logging import print_log
    print_log(msg + '; loading anyway (allow_other_backbone)',
              logger='current', level=logging.WARNING)


def backbone_source(model: nn.Module, recorded: Optional[str],
                    allow_other_backbone: bool = False) -> str:
    """Where ``model``'s frozen backbone came from, and whether it is the
    one a file just loaded records (its fingerprint), as the loaders' log
    says it. Without ``allow_other_backbone`` the loader has refused any
    other backbone, so nothing is hashed again."""
    backbone = _backbone_of(model)
    init_cfg = getattr(backbone, 'init_cfg', None)
    if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
        origin = f'frozen backbone from {init_cfg.get("checkpoint")}'
    else:
        origin = ('frozen backbone randomly initialised (no Pretrained '
                  'init_cfg)')
    if recorded is None:
        return origin + '; the file records no fingerprint'
    if not allow_other_backbone or frozen_fingerprint(model) == recorded:
        return origin + ', the one the file was trained on (fingerprint ' \
            'verified)'
    return origin + ', NOT the one the file was trained on ' \
        '(allow_other_backbone)'


#: The key of a vpt_mm file's record in each entry of its state dict's
#: ``_metadata`` (:func:`attach_file_record`).
FILE_RECORD_KEY = 'vpt_mm_file'


def attach_file_record(state: dict,
                       record: dict,
                       metadata: Optional[dict] = None) -> OrderedDict:
    """``state`` with ``record`` in its load metadata: the one way a file's
    record reaches the modules loading it.

    ``torch`` and mmengine hand each module ``state_dict._metadata[path]``
    (its *local metadata*) while loading. The returned state dict's
    ``_metadata`` is a plain ``OrderedDict``: ``metadata`` (the saved one,
    if any), with ``record`` under :data:`FILE_RECORD_KEY` in the entry of
    the root (``''``) and of every module path that holds a tensor of the
    file (or had saved metadata). The load pre-hook of :func:`guard_loads`
    reads it there.

    Args:
        state (dict): The file's tensors.
        record (dict): ``kind`` (``'tuned'`` or ``'checkpoint'``),
            ``filename``, and what the file records (readout, whether it
            omits its frozen backbone, the backbone's fingerprint, prompt
            shapes, task).
        metadata (dict, optional): The state dict's saved ``_metadata``.

    Returns:
        OrderedDict: A copy of ``state`` with the record attached.
    """
    metadata = metadata or {}
    paths = {''} | set(metadata)
    for key in state:
        parts = key.split('.')[:-1]
        paths.update('.'.join(parts[:i]) for i in range(1, len(parts) + 1))
    out = OrderedDict(state)
    out._metadata = OrderedDict(
        (path, dict(metadata.get(path) or {}, **{FILE_RECORD_KEY: record}))
        for path in sorted(paths))
    return out


def file_record(state: dict) -> Optional[dict]:
    """The record :func:`attach_file_record` attached to ``state``, or
    None (a file vpt_mm did not write)."""
    metadata = getattr(state, '_metadata', None) or {}
    return (metadata.get('') or {}).get(FILE_RECORD_KEY)


def detach_file_record(state: dict) -> dict:
    """``state`` without the record of :func:`attach_file_record` (its
    saved metadata kept): what vpt_mm's own loaders load once they have
    checked the file themselves, with their own options
    (``allow_other_backbone``)."""
    if file_record(state) is None:
        return state
    out = OrderedDict(state)
    out._metadata = OrderedDict(
        (path, {k: v for k, v in entry.items() if k != FILE_RECORD_KEY})
        for path, entry in state._metadata.items())
    return out
