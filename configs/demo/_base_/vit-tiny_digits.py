# The demo's tiny ViT (4 layers, width 64) on 8x8 grey digits, 2x2 patches.
vit_tiny = dict(
    embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=128)
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        type='ClsDataPreprocessor', mean=[127.5], std=[127.5],
        to_rgb=False),
    backbone=dict(
        type='VisionTransformer',
        arch=vit_tiny,
        img_size=8,
        patch_size=2,
        in_channels=1),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=5,
        in_channels=64,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
)
