# Demo baseline: linear probe of the same frozen backbone on digits 5-9
# (no prompts: mmpretrain's ViT with every stage frozen, only the head
# trains), same schedule as the VPT-Deep demo.
_base_ = ['./vpt-deep_vit-tiny_digits-5to9.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionTransformer',
        arch={{_base_.vit_tiny}},
        img_size=8,
        patch_size=2,
        in_channels=1,
        frozen_stages=4,
        init_cfg=dict(
            type='Pretrained',
            checkpoint={{_base_.pretrained}},
            prefix='backbone.')))
