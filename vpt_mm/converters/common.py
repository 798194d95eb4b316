"""Reading original checkpoints and writing converted backbone ones."""
from __future__ import annotations

import os
import re
from typing import Callable, Dict, Optional, Sequence, Tuple

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
    from ..fileio import atomic_save
    atomic_save(path, lambda tmp: torch.save(
        dict(state_dict=state, meta=dict(converted_from=source)), tmp))


def rename_keys(state: Dict[str, torch.Tensor],
                rules: Sequence[Tuple[str, str]],
                dropped: Sequence[str],
                source: str,
                hint: str = '') -> Dict[str, torch.Tensor]:
    """Rename the keys of a state dict by regular-expression rules.

    Args:
        state (dict): The original state dict.
        rules (Sequence[tuple[str, str]]): ``(pattern, replacement)`` pairs
            for :func:`re.sub`; the first pattern that matches a key wins.
        dropped (Sequence[str]): Patterns of keys to leave out (e.g. the
            classifier head, buffers the model rebuilds).
        source (str): The source layout's name, for the error message.
        hint (str): What the converter supports, appended to the error.

    Returns:
        dict: The renamed state dict.

    Raises:
        ValueError: On a key no rule or drop pattern matches, naming it.
    """
    out = {}
    for key, value in state.items():
        if any(re.match(p, key) for p in dropped):
            continue
        for pattern, repl in rules:
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            raise ValueError(f'{source} key {key!r} has no known equivalent'
                             + (f'; {hint}' if hint else ''))
    return out


def convert_file(convert: Callable[[Dict[str, torch.Tensor]],
                                   Dict[str, torch.Tensor]],
                 description: str,
                 argv: Optional[Sequence[str]] = None,
                 grid_option: bool = False) -> None:
    """The command line of every ``tools/model_converters/`` script.

    Reads ``src``, converts it with ``convert`` and writes ``dst`` as an
    mmengine-style backbone checkpoint.

    Args:
        convert (Callable): State dict -> backbone state dict.
        description (str): The script's one-line description.
        argv (Sequence[str], optional): Arguments; defaults to
            ``sys.argv[1:]``.
        grid_option (bool): Offer ``--grid H W``, passed to ``convert`` as
            ``grid`` (resize the position embedding). Defaults to False.
    """
    import argparse
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('src', help='original checkpoint (.pth, .bin, '
                        '.safetensors, .npz)')
    parser.add_argument('dst', help='output mmpretrain-format checkpoint')
    if grid_option:
        parser.add_argument(
            '--grid', type=int, nargs=2, metavar=('H', 'W'),
            help='resize the position embedding to this patch grid')
    args = parser.parse_args(argv)
    kwargs = dict(grid=args.grid) if grid_option else {}
    state = convert(load_source_checkpoint(args.src), **kwargs)
    save_backbone_checkpoint(state, args.dst, source=args.src)
    print(f'Saved {len(state)} tensors to {args.dst}')


def final_norm_rule(state: Dict[str, torch.Tensor], stage_prefix: str,
                    required: str, source: str) -> Tuple[str, str]:
    """The rule renaming a hierarchical model's final ``norm.`` to
    mmpretrain's ``norm<last stage>.``, after checking the layout.

    Args:
        state (dict): The original state dict.
        stage_prefix (str): The stages' key prefix, e.g. ``'layers'``.
        required (str): A key every state dict of the layout has.
        source (str): The layout's name, for the error message.

    Returns:
        tuple[str, str]: A ``(pattern, replacement)`` rule.

    Raises:
        ValueError: If ``state`` has no stages or lacks ``required``.
    """
    stages = {
        int(m.group(1))
        for k in state
        for m in [re.match(rf'^{re.escape(stage_prefix)}\.(\d+)\.', k)] if m
    }
    if not stages or required not in state:
        raise ValueError(f'Not an official {source} state dict: no '
                         f"'{stage_prefix}.<i>.' or {required!r} keys")
    return (r'^norm\.', f'norm{max(stages)}.')
