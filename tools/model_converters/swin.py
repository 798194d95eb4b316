"""Convert an official Swin checkpoint to mmpretrain ``SwinTransformer`` keys.

Example:
    python tools/model_converters/swin.py \
        swin_base_patch4_window7_224_22k.pth checkpoints/swin-b_in21k.pth
"""
from vpt_mm.converters import convert_file, convert_swin

if __name__ == '__main__':
    convert_file(convert_swin, __doc__.splitlines()[0])
