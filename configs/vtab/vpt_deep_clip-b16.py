# VPT-Deep on a VTAB-1k task, CLIP ViT-B/16 image tower (OpenAI): timm's
# `vit_base_patch16_clip_224.openai`;
# otherwise as vpt_deep_dinov2-b14.py (the paper's protocol, the model's own
# normalisation, timm's file loaded strictly).
#   python tools/train.py configs/vtab/vpt_deep_clip-b16.py --task cifar100
_base_ = ['./vpt_deep_dinov2-b14.py']

model = dict(
    # The model's own mean and std (timm's pretrained config; tested).
    data_preprocessor=dict(
        mean=[122.7709, 116.746, 104.0937],
        std=[68.5005, 66.6322, 70.3232]),
    backbone=dict(
        model_name='vit_base_patch16_clip_224',
        out_type='cls_token',
        init_cfg=dict(
            checkpoint='checkpoints/timm/vit_base_patch16_clip_224.openai/'
            'model.safetensors')))
