"""Reading original checkpoints and writing converted backbone ones."""
from __future__ import annotations

import os
from typing import Dict

import torch

from ..checkpoints import extract_state_dict


def load_source_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors``, ``.npz`` or a torch file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Checkpoint {path} does not exist')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(path)
    if path.endswith('.npz'):
        import numpy as np
        with np.load(path) as data:
            return {k: torch.from_numpy(data[k]) for k in data.files}
    return extract_state_dict(
        torch.load(path, map_location='cpu', weights_only=True))


def save_backbone_checkpoint(state: Dict[str, torch.Tensor], path: str,
                             source: str) -> None:
    """Save converted backbone weights as an mmengine-style checkpoint.

    The keys are the backbone's own (no ``backbone.`` prefix), so a config
    loads it with ``init_cfg=dict(type='Pretrained', checkpoint=path)``.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(
        dict(state_dict=state, meta=dict(converted_from=source)), path)
