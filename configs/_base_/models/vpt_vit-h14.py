# ViT-H/14 with VPT-Deep prompts (p=50) and a linear head: the ViT-B/16 model
# with another arch, patch size and checkpoint.
_base_ = ['./vpt_vit-b16.py']

model = dict(
    backbone=dict(
        arch='h',
        patch_size=14,
        init_cfg=dict(checkpoint='checkpoints/vit-h14_in21k.pth')),
    head=dict(in_channels=1280))
