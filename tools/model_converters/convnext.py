"""Convert an official ConvNeXt checkpoint to mmpretrain ``ConvNeXt`` keys.

Example:
    python tools/model_converters/convnext.py \
        convnext_base_22k_224.pth checkpoints/convnext-b_in21k.pth
"""
from vpt_mm.converters import convert_convnext, convert_file

if __name__ == '__main__':
    convert_file(convert_convnext, __doc__.splitlines()[0])
