# Demo step 1: pre-train a tiny ViT (all parameters) on the digits 0-4.
# Its last checkpoint is the frozen backbone of the transfer demos.
_base_ = [
    '../_base_/datasets/sklearn_digits.py', '../_base_/default_runtime.py'
]

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
        in_channels=1,
        drop_rate=0.1),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=5,
        in_channels=64,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
)

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=3,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=3, end=40,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=40, val_interval=10)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=40, max_keep_ckpts=1))
work_dir = './work_dirs/demo/pretrain_vit-tiny_digits-0to4'
