# ResNet-50 (ImageNet-1k, torchvision) with a learnable pixel frame of width
# p=5 around the 224x224 input (the network sees 234x234), global average
# pooling and a linear head. BatchNorm statistics stay frozen. The backbone
# loads strictly from tools/model_converters/torchvision_resnet.py's output
# of torchvision's resnet50-0676ba61.pth (docs/en/user_guides/checkpoints.md).
model = dict(
    type='TunedClassifier',
    tuning=dict(type='VPT'),
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='PromptedResNet',
        depth=50,
        img_size=224,
        out_indices=(3, ),
        prompt_cfg=dict(num_tokens=5, dropout=0.0),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/resnet-50_in1k.pth')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
)
