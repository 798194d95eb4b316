"""Extract the tuned tensors (prompts + head, ...) of a training checkpoint
into a small safetensors file; ``tools/test.py CONFIG FILE.safetensors``
evaluates it on top of the config's pretrained backbone.

Example:
    python tools/model_converters/extract_tuned.py CONFIG \
        work_dirs/x/epoch_100.pth task.safetensors
"""
import argparse

from mmengine.registry import MODELS

from vpt_mm.checkpoints import (
    load_model_checkpoint,
    recorded_task,
    save_tuned,
    task_of,
)
from vpt_mm.config import add_config_args, config_from_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument('checkpoint', help='mmengine training checkpoint')
    parser.add_argument('out', help='output .safetensors file')
    args = parser.parse_args()
    cfg = config_from_args(args)
    model = MODELS.build(cfg.model)
    # Strict and verified; a checkpoint saved without its frozen backbone
    # gets it from the config's pretrained checkpoint (fingerprint checked).
    meta = load_model_checkpoint(model, args.checkpoint, task=task_of(cfg))
    recorded = recorded_task(meta)
    state = save_tuned(model, args.out, recorded['classes'],
                       recorded['task'])
    size = sum(v.numel() * v.element_size() for v in state.values())
    print(f'Saved {len(state)} tuned tensors ({size / 1024:.1f} KiB) to '
          f'{args.out}')


if __name__ == '__main__':
    main()
