# ViT-L/16 with VPT-Deep prompts (p=50) and a linear head: the ViT-B/16 model
# with another arch, patch size and checkpoint.
_base_ = ['./vpt_vit-b16.py']

model = dict(
    backbone=dict(
        arch='l',
        patch_size=16,
        init_cfg=dict(checkpoint='checkpoints/vit-l16_in21k.pth')),
    head=dict(in_channels=1024))
