"""Convert a timm ViT checkpoint to mmpretrain ``VisionTransformer`` keys.

Example:
    python tools/model_converters/timm_vit.py \
        vit_base_patch16_224.augreg_in21k.safetensors \
        checkpoints/vit-b16_in21k.pth
"""
from vpt_mm.converters import convert_file, convert_timm_vit

if __name__ == '__main__':
    convert_file(convert_timm_vit, __doc__.splitlines()[0])
