"""Checkpoints: strict loading everywhere weights feed a number.

One module per kind of file, and what they share:

- :mod:`~vpt_mm.checkpoints.pretrained`: pretrained backbones
  (:func:`load_pretrained_backbone`, strict: only prompt keys may be
  missing);
- :mod:`~vpt_mm.checkpoints.tuned`: tuned-only files, a task's tuned
  tensors with their sha256 and the fingerprint of the frozen backbone they
  were trained on (:func:`save_tuned`, :func:`read_tuned`,
  :func:`load_tuned`);
- :mod:`~vpt_mm.checkpoints.training`: mmengine training checkpoints with
  vpt_mm's integrity record, small ones without the frozen backbone
  (:func:`checkpoint_record`, :func:`verify_checkpoint`,
  :func:`load_full_checkpoint`, :func:`load_training_checkpoint`);
- :mod:`~vpt_mm.checkpoints.loading`: reading any file
  (:func:`load_model_checkpoint`, :func:`load_verified_checkpoint`) and
  mmengine's loaders (the ``CheckpointLoader`` schemes attach a file's
  record to its state dict; the one load pre-hook, :func:`guard_loads`,
  checks it, so generic loaders load strictly too);
- :mod:`~vpt_mm.checkpoints.records` (what files record: task, readout,
  frozen keys, fingerprints, and the checks between them) and
  :mod:`~vpt_mm.checkpoints.strict` (key checking).
"""
from .loading import (
    SAFETENSORS_SCHEME,
    guard_loads,
    is_guarded,
    load_from_tuned,
    load_from_vpt_mm,
    load_model_checkpoint,
    load_verified_checkpoint,
    register_checkpoint_schemes,
)
from .pretrained import load_configured_pretrained, load_pretrained_backbone
from .records import (
    CHECKPOINT_META_KEY,
    FILE_RECORD_KEY,
    READOUT_OPTIONS,
    attach_file_record,
    backbone_source,
    check_task,
    detach_file_record,
    file_record,
    frozen_fingerprint,
    frozen_keys,
    readout_of,
    recorded_task,
    task_of,
    tuned_state_dict,
)
from .strict import NOT_THIS_CONFIG, extract_state_dict
from .training import (
    CHECKSUMMED,
    checkpoint_record,
    load_full_checkpoint,
    load_training_checkpoint,
    omit_frozen,
    omits_frozen,
    record_of,
    state_dict_without_frozen,
    verify_checkpoint,
)
from .tuned import TUNED_FORMAT, load_tuned, read_tuned, save_tuned

__all__ = [
    'CHECKPOINT_META_KEY', 'CHECKSUMMED', 'FILE_RECORD_KEY',
    'NOT_THIS_CONFIG', 'READOUT_OPTIONS', 'SAFETENSORS_SCHEME',
    'TUNED_FORMAT', 'attach_file_record', 'backbone_source', 'check_task',
    'checkpoint_record', 'detach_file_record', 'extract_state_dict',
    'file_record',
    'frozen_fingerprint', 'frozen_keys', 'guard_loads', 'is_guarded',
    'load_from_tuned', 'load_from_vpt_mm',
    'load_configured_pretrained', 'load_full_checkpoint',
    'load_model_checkpoint',
    'load_pretrained_backbone', 'load_training_checkpoint', 'load_tuned',
    'load_verified_checkpoint', 'omit_frozen', 'omits_frozen',
    'read_tuned', 'readout_of', 'record_of', 'recorded_task',
    'register_checkpoint_schemes', 'save_tuned',
    'state_dict_without_frozen', 'task_of', 'tuned_state_dict',
    'verify_checkpoint'
]
