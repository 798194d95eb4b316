"""Convert a torchvision ResNet checkpoint to mmpretrain ``ResNet`` keys.

Example:
    python tools/model_converters/torchvision_resnet.py \
        resnet50-0676ba61.pth checkpoints/resnet-50_in1k.pth
"""
from vpt_mm.converters import convert_file, convert_torchvision_resnet

if __name__ == '__main__':
    convert_file(convert_torchvision_resnet, __doc__.splitlines()[0])
