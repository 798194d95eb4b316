# ViT-B/16 with VPT-Deep prompts (p=50) and a linear head, mmpretrain classifier.
# The backbone is loaded strictly from an mmpretrain-format checkpoint made
# by tools/model_converters/ (see README, "Checkpoints"); only the prompt
# keys may be missing from it. Task configs set head.num_classes.
model = dict(
    type='TunedClassifier',
    tuning=dict(type='VPT'),
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='PromptedViT',
        arch='b',
        img_size=224,
        patch_size=16,
        drop_rate=0.0,
        drop_path_rate=0.0,
        out_type='cls_token',
        prompt_cfg=dict(num_tokens=50, deep=True, dropout=0.1),
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
