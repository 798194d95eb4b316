"""Convert an MAE pre-training checkpoint to mmpretrain ViT keys.

Example:
    python tools/model_converters/mae_vit.py \
        mae_pretrain_vit_base.pth checkpoints/vit-b16_mae.pth
"""
from vpt_mm.converters import convert_file, convert_mae_vit

if __name__ == '__main__':
    convert_file(convert_mae_vit, __doc__.splitlines()[0])
