"""Checkpoints: strict loading everywhere weights feed a number.

A VPT task is stored as its tuned tensors only (prompts + head, and whatever
else the chosen protocol trains) in a safetensors file; the frozen backbone
comes from its pretrained checkpoint. :func:`save_tuned` writes such a file
with the sha256 of its tensors and the fingerprint of the frozen backbone it
was trained on; :func:`load_tuned` loads it strictly onto a freshly built
model and verifies both. :func:`load_full_checkpoint` is the strict loader of
whole-model (mmengine) checkpoints, and :func:`load_pretrained_backbone` that
of pretrained backbones.

mmengine's own loaders (``load_checkpoint``, the mmpretrain / mmseg
inferencers) read a ``.safetensors`` path through
:func:`load_from_tuned`: the file is verified, and the prompted
backbone it is loaded into rebuilds its frozen weights from its pretrained
checkpoint and checks the fingerprint before a tensor is copied.
"""
from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .fileio import atomic_save
from .integrity import backbone_fingerprint, check_finite, digest
from .prompts import (
    PromptModule,
    added_parameter_names,
    prompt_parameter_names,
)

#: Format of tuned-only files. v1 files (no checksum, no backbone
#: fingerprint) are refused: re-extract them from their training checkpoint.
TUNED_FORMAT = 'vpt_mm.tuned.v2'
#: Key of vpt_mm's integrity record in a training checkpoint's ``meta``.
CHECKPOINT_META_KEY = 'vpt_mm'
#: Parts of an mmengine checkpoint covered by its recorded sha256.
CHECKSUMMED = ('state_dict', 'optimizer', 'param_schedulers', 'rng_state')

__all__ = [
    'extract_state_dict', 'load_pretrained_backbone', 'tuned_state_dict',
    'save_tuned', 'load_tuned', 'read_tuned', 'frozen_fingerprint',
    'checkpoint_record', 'verify_checkpoint', 'load_verified_checkpoint',
    'load_full_checkpoint', 'frozen_keys', 'omit_frozen', 'omits_frozen',
    'record_of', 'state_dict_without_frozen', 'load_model_checkpoint',
    'load_training_checkpoint',
    'TUNED_FORMAT', 'readout_of', 'recorded_task', 'check_task', 'task_of'
]


def extract_state_dict(checkpoint: dict) -> Dict[str, torch.Tensor]:
    """Return the weights of a checkpoint in any of the common layouts.

    mmengine (``state_dict``), original releases (``model``) and bare state
    dicts are accepted; a ``module.`` prefix (DataParallel) is removed.
    """
    if not isinstance(checkpoint, dict):
        raise ValueError(
            f'A checkpoint must be a dict, got {type(checkpoint).__name__}')
    state = checkpoint
    for key in ('state_dict', 'model'):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            state = checkpoint[key]
            break
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


def _check_key_sets(missing: list, unexpected: list, what: str,
                    hint: str) -> None:
    """Raise a ValueError naming the first missing (else unexpected) key."""
    if missing or unexpected:
        first = (missing or unexpected)[0]
        kind = 'missing from' if missing else 'unexpected in'
        raise ValueError(
            f'{what}: key {first!r} is {kind} the checkpoint ({len(missing)} '
            f'missing, {len(unexpected)} unexpected keys in all; {hint})')


#: What a checkpoint that does not fit its model probably is.
NOT_THIS_CONFIG = ('is it a checkpoint of this config (prompt length, depth, '
                   'protocol, number of classes)?')


def _check_fits(expected: Dict[str, torch.Tensor],
                state: Dict[str, torch.Tensor], what: str) -> None:
    """Raise a ValueError unless ``state`` has exactly the keys of
    ``expected``, with the same shapes; it names the first bad key."""
    _check_key_sets([k for k in expected if k not in state],
                    [k for k in state if k not in expected], what,
                    NOT_THIS_CONFIG)
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f'{what}: {key!r} has shape {tuple(value.shape)} in the '
                f'checkpoint, {tuple(expected[key].shape)} in the model; '
                f'{NOT_THIS_CONFIG}')


def load_pretrained_backbone(backbone: nn.Module,
                             filename: str,
                             prefix: Optional[str] = None,
                             map_location: str = 'cpu') -> None:
    """Load a pretrained checkpoint into a prompted backbone, strictly.

    Prompt parameters (and those of other added modules, e.g. adapters) may
    be missing from the checkpoint (they keep their initialisation); any
    other missing or unexpected key, or a shape that
    does not fit, raises a :class:`ValueError` naming the first bad key.
    The backbone's own ``load_state_dict`` pre-hooks run, so e.g. a ViT
    position embedding of another resolution is resized.

    Args:
        backbone (nn.Module): The backbone to load into.
        filename (str): Path or URL understood by mmengine's
            ``CheckpointLoader``.
        prefix (str, optional): Only keys under this prefix are loaded, with
            the prefix removed, e.g. ``'backbone.'`` for a whole-classifier
            mmpretrain checkpoint. Defaults to None.
        map_location (str): Defaults to ``'cpu'``.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    checkpoint = CheckpointLoader.load_checkpoint(filename,
                                                  map_location=map_location)
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if isinstance(meta, dict) and (meta.get('vpt_mm_tuned')
                                   or omits_frozen(checkpoint)):
        kind = ('tuned-only file' if meta.get('vpt_mm_tuned') else
                'training checkpoint saved without its frozen backbone')
        raise ValueError(
            f'{filename} is a {kind} (prompts and head), not a pretrained '
            'backbone: point init_cfg at the pretrained checkpoint it was '
            'trained on, and load this file with tools/test.py CONFIG FILE '
            '(or load_from)')
    state = extract_state_dict(checkpoint)
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state = {
            k[len(prefix):]: v
            for k, v in state.items() if k.startswith(prefix)
        }
        if not state:
            raise ValueError(f'No key of checkpoint {filename} starts with '
                             f'the prefix {prefix!r}')
    elif any(k.startswith('backbone.') for k in state):
        raise ValueError(
            f'Checkpoint {filename} holds a whole model (keys start with '
            "'backbone.'); set prefix='backbone.' in the Pretrained init_cfg")
    check_finite(state, f'Pretrained checkpoint {filename}')
    added_keys = added_parameter_names(backbone)
    tuned = sorted(k for k in state if k in added_keys)
    if tuned:
        raise ValueError(
            f'Checkpoint {filename} holds prompt (or adapter) tensors '
            f'({tuned[:3]}): it is a tuned or training checkpoint, not a '
            'pretrained backbone, and would overwrite the prompts. Load it '
            'with load_from / tools/test.py CONFIG FILE, and point init_cfg '
            'at the backbone it was trained on')
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f'Checkpoint {filename} does not fit '
                         f'{type(backbone).__name__}: {err}') from err
    # Relative-position indices (Swin) are rebuilt by the model itself and
    # dropped by its pre-hook when a bias table is resized.
    missing = [
        k for k in missing if k not in added_keys
        and not k.endswith('relative_position_index')
    ]
    # Weights of layers this configuration leaves out (e.g. a ViT's final
    # norm with final_norm=False, as mmseg's SETR uses it).
    unused = []
    if hasattr(backbone, 'unused_pretrained_keys'):
        unused = backbone.unused_pretrained_keys(unexpected)
    unexpected = [k for k in unexpected if k not in unused]
    _check_key_sets(
        missing, unexpected,
        f'Checkpoint {filename} does not fit {type(backbone).__name__}',
        'convert the checkpoint with tools/model_converters/ first?')
    from mmengine.logging import print_log
    print_log(
        f'Loaded {len(state) - len(unused)} pretrained tensors into '
        f'{type(backbone).__name__} from {filename}; prompts keep their '
        'initialisation' + (f'; unused (layers switched off): {unused}'
                            if unused else ''), logger='current')


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


def _backbone_of(model: nn.Module) -> nn.Module:
    """The backbone of a classifier / segmentor; a bare backbone is its
    own."""
    backbone = getattr(model, 'backbone', None)
    return backbone if isinstance(backbone, nn.Module) else model


#: Backbone options that decide what the head reads: a head trained on one
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


def frozen_fingerprint(model: nn.Module) -> str:
    """Fingerprint of the frozen tensors of ``model``'s backbone: everything
    in its state dict that a tuned-only file does not hold (see
    :func:`~vpt_mm.integrity.backbone_fingerprint`)."""
    backbone = _backbone_of(model)
    return backbone_fingerprint(backbone, tuned_state_dict(backbone))


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


def _check_prompt_meta(meta: dict, model: nn.Module, source: str) -> None:
    model_meta = _prompt_meta(model)
    for key in sorted(set(meta) & set(model_meta)):
        if meta[key] != model_meta[key]:
            name, attr = key.rsplit('.', 1)
            raise ValueError(
                f'{source} was saved for {attr}={meta[key]} at {name!r}, '
                f'but the model has {attr}={model_meta[key]}')


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


def _named_tensors(model: nn.Module, keys) -> Dict[str, torch.Tensor]:
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    return {k: tensors[k] for k in keys}


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
    # _check_fits made sure that only the omitted keys are missing.
    model.load_state_dict(state, strict=not omitted)


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
