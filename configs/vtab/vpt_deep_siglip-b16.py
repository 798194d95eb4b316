# VPT-Deep on a VTAB-1k task, SigLIP ViT-B/16 image tower (WebLI): timm's
# `vit_base_patch16_siglip_224.webli`;
# otherwise as vpt_deep_dinov2-b14.py (the paper's protocol, the model's own
# normalisation, timm's file loaded strictly).
#   python tools/train.py configs/vtab/vpt_deep_siglip-b16.py --task cifar100
# SigLIP has no class token: the head reads the patch tokens' mean.
_base_ = ['./vpt_deep_dinov2-b14.py']

model = dict(
    # The model's own mean and std (timm's pretrained config; tested).
    data_preprocessor=dict(
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5]),
    backbone=dict(
        model_name='vit_base_patch16_siglip_224',
        out_type='avg_featmap',
        init_cfg=dict(
            checkpoint='checkpoints/timm/vit_base_patch16_siglip_224.webli/'
            'model.safetensors')))
