# Demo baseline: linear probe of the same frozen backbone on digits 5-9
# (no prompts: the Linear protocol on mmpretrain's ViT, whose pretrained
# weights load strictly; only the head trains, on the backbone's features
# computed once: cache_features), same schedule as the VPT-Deep demo.
_base_ = ['./vpt-deep_vit-tiny_digits-5to9.py']

model = dict(
    type='TunedClassifier',
    tuning=dict(type='Linear', cache_features=True),
    backbone=dict(
        _delete_=True,
        type='VisionTransformer',
        arch={{_base_.vit_tiny}},
        img_size=8,
        patch_size=2,
        in_channels=1,
        init_cfg=dict(
            type='Pretrained',
            checkpoint={{_base_.pretrained}},
            prefix='backbone.')))
