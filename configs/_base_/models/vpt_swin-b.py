# Swin-B (window 7, 224x224) with VPT-Deep prompts (p=10), average-pooled
# final-stage image tokens and a linear head, mmpretrain classifier.
# The backbone loads strictly from tools/model_converters/swin.py's output
# of the official swin_base_patch4_window7_224_22k.pth
# (docs/en/user_guides/checkpoints.md); only the prompt keys may be missing from it.
model = dict(
    type='TunedClassifier',
    tuning=dict(type='VPT'),
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='PromptedSwin',
        arch='base',
        img_size=224,
        window_size=7,
        drop_rate=0.0,
        drop_path_rate=0.0,
        out_indices=(3, ),
        # The official Swin VPT: prompts carried through patch merging, the
        # feature is the mean of the final prompt and image tokens.
        prompt_merging='carry',
        out_type='avg_all',
        prompt_cfg=dict(num_tokens=10, deep=True, dropout=0.1),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/swin-b_in21k.pth')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=1024,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
)
