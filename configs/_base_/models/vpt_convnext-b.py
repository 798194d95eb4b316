# ConvNeXt-B (ImageNet-21k) with a learnable pixel frame of width p=5 around
# the 224x224 input (the network sees 234x234) and a linear head on the
# pooled, normalised final features. The backbone loads strictly from
# tools/model_converters/convnext.py's output of the official
# convnext_base_22k_224.pth (docs/en/user_guides/checkpoints.md).
model = dict(
    type='TunedClassifier',
    tuning=dict(type='VPT'),
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='PromptedConvNeXt',
        arch='base',
        img_size=224,
        drop_path_rate=0.0,
        out_indices=[3],
        gap_before_final_norm=True,
        prompt_cfg=dict(num_tokens=5, dropout=0.0),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/convnext-b_in21k.pth')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=1024,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
)
