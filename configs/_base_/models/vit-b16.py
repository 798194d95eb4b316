# ViT-B/16 (ImageNet-21k) without prompts for the baseline protocols, a
# linear head and the protocol from `tuning` (vpt_mm/tuning/protocols.py):
# Full, Linear, Partial, Mlp, Sidetune, Bias, Adapter. The backbone is
# mmpretrain's own VisionTransformer and loads the same converted checkpoint
# as PromptedViT (through mmengine's loader, which logs mismatched keys).
model = dict(
    type='TunedClassifier',
    tuning=dict(type='Linear'),
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='mmpretrain.VisionTransformer',
        arch='b',
        img_size=224,
        patch_size=16,
        drop_rate=0.0,
        drop_path_rate=0.0,
        out_type='cls_token',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/vit-b16_in21k.pth')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
)
