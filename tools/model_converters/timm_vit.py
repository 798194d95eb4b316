"""Convert a timm ViT checkpoint to mmpretrain ``VisionTransformer`` keys.

Example:
    python tools/model_converters/timm_vit.py \
        vit_base_patch16_224.augreg_in21k.safetensors \
        checkpoints/vit-b16_in21k.pth
"""
import argparse

from vpt_mm.converters import (
    convert_timm_vit,
    load_source_checkpoint,
    save_backbone_checkpoint,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='timm checkpoint (.pth, .bin, '
                        '.safetensors)')
    parser.add_argument('dst', help='output mmpretrain-format checkpoint')
    args = parser.parse_args()
    state = convert_timm_vit(load_source_checkpoint(args.src))
    save_backbone_checkpoint(state, args.dst, source=args.src)
    print(f'Saved {len(state)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
