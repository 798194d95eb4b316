# VPT-Deep on a FGVC dataset, CLIP ViT-B/16 image tower (OpenAI): timm's
# `vit_base_patch16_clip_224.openai`;
# otherwise as vpt_deep_dinov2-b14.py (the paper's protocol, the model's own
# normalisation, timm's file loaded strictly).
#   python tools/train.py configs/fgvc/vpt_deep_clip-b16.py --task cub
_base_ = ['./vpt_deep_dinov2-b14.py']

model = dict(
    backbone=dict(
        model_name='vit_base_patch16_clip_224',
        out_type='cls_token',
        init_cfg=dict(
            checkpoint='checkpoints/timm/vit_base_patch16_clip_224.openai/'
            'model.safetensors')))
