"""Write a random stand-in for a config's pretrained backbone checkpoint.

For smoke runs without the real weights: the same config and seed always
give the same tensors, so a task trained on the stand-in can be tested,
extracted and served later (its backbone fingerprint matches).

Example:
    python tools/model_converters/standin_checkpoint.py \
        configs/vtab/vpt_deep_vit-b.py checkpoints/standin_vit-b16.pth
    python tools/train.py configs/vtab/vpt_deep_vit-b.py --task dmlab \
        --cfg-options \
        model.backbone.init_cfg.checkpoint=checkpoints/standin_vit-b16.pth
"""
import argparse

import vpt_mm  # noqa: F401  (registration, compatibility fixes)
from vpt_mm.config import add_config_args, config_from_args
from vpt_mm.converters import save_backbone_checkpoint, standin_backbone_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument('out', help='output .pth file')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the random weights (default: 0)')
    args = parser.parse_args()
    cfg = config_from_args(args)
    state = standin_backbone_state(cfg, args.seed)
    save_backbone_checkpoint(
        state, args.out,
        f'random stand-in of {args.config} (seed {args.seed}); not '
        'pretrained')
    print(f'Saved a random stand-in backbone ({len(state)} tensors, seed '
          f'{args.seed}) to {args.out}; use it with --cfg-options '
          f'model.backbone.init_cfg.checkpoint={args.out}')


if __name__ == '__main__':
    main()
