"""Extract the tuned tensors (prompts + head, ...) of a training checkpoint
into a small safetensors file; ``tools/test.py CONFIG FILE.safetensors``
evaluates it on top of the config's pretrained backbone.

Example:
    python tools/model_converters/extract_tuned.py CONFIG \
        work_dirs/x/epoch_100.pth task.safetensors
"""
import argparse

from mmengine.config import DictAction
from mmengine.registry import MODELS

from vpt_mm.checkpoints import (
    extract_state_dict,
    load_full_checkpoint,
    load_verified_checkpoint,
    omits_frozen,
    record_of,
    save_tuned,
)
from vpt_mm.runner import config_from_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the config the checkpoint was '
                        'trained with (decides what is tuned)')
    parser.add_argument('checkpoint', help='mmengine training checkpoint')
    parser.add_argument('out', help='output .safetensors file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    cfg = config_from_file(args.config, args.cfg_options)
    model = MODELS.build(cfg.model)
    checkpoint, verified = load_verified_checkpoint(args.checkpoint,
                                                    map_location='cpu')
    if not verified:
        print(f'warning: {args.checkpoint} records no sha256 (not written by '
              'vpt_mm); its bytes could not be verified')
    if omits_frozen(checkpoint):
        # Saved without its frozen backbone: rebuild that from the config's
        # pretrained checkpoint (its fingerprint is checked on loading).
        model.init_weights()
    load_full_checkpoint(model, extract_state_dict(checkpoint),
                         args.checkpoint,
                         record_of(checkpoint))
    state = save_tuned(model, args.out)
    size = sum(v.numel() * v.element_size() for v in state.values())
    print(f'Saved {len(state)} tuned tensors ({size / 1024:.1f} KiB) to '
          f'{args.out}')


if __name__ == '__main__':
    main()
