"""Convert a MoCo v3 pre-training checkpoint to mmpretrain ViT keys.

Example:
    python tools/model_converters/mocov3_vit.py \
        vit-b-300ep.pth.tar checkpoints/vit-b16_mocov3.pth
"""
from vpt_mm.converters import convert_file, convert_mocov3_vit

if __name__ == '__main__':
    convert_file(convert_mocov3_vit, __doc__.splitlines()[0])
