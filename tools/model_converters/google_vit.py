"""Convert a Google ViT .npz checkpoint to mmpretrain ViT keys.

Example:
    python tools/model_converters/google_vit.py \
        imagenet21k_ViT-B_16.npz checkpoints/vit-b16_in21k.pth
    python tools/model_converters/google_vit.py \
        imagenet21k_ViT-L_16.npz checkpoints/vit-l16_in21k_512.pth --grid 32 32
"""
from vpt_mm.converters import convert_file, convert_google_vit

if __name__ == '__main__':
    convert_file(convert_google_vit, __doc__.splitlines()[0], grid_option=True)
