# VPT-Deep on a FGVC dataset, EVA-02 ViT-B/14 (MIM on ImageNet-22k; RoPE,
# SwiGLU): timm's `eva02_base_patch14_224.mim_in22k`;
# otherwise as vpt_deep_dinov2-b14.py (the paper's protocol, the model's own
# normalisation, timm's file loaded strictly).
#   python tools/train.py configs/fgvc/vpt_deep_eva02-b14.py --task cub
_base_ = ['./vpt_deep_dinov2-b14.py']

model = dict(
    # The model's own mean and std (timm's pretrained config; tested).
    data_preprocessor=dict(
        mean=[122.7709, 116.746, 104.0937],
        std=[68.5005, 66.6322, 70.3232]),
    backbone=dict(
        model_name='eva02_base_patch14_224',
        out_type='cls_token',
        init_cfg=dict(
            checkpoint='checkpoints/timm/eva02_base_patch14_224.mim_in22k/'
            'model.safetensors')))
