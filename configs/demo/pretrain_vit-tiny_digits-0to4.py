# Demo step 1: pre-train a tiny ViT (all parameters) on the digits 0-4.
# Its last checkpoint is the frozen backbone of the transfer demos.
_base_ = [
    './_base_/vit-tiny_digits.py', '../_base_/datasets/sklearn_digits.py',
    '../_base_/default_runtime.py'
]

model = dict(backbone=dict(drop_rate=0.1))

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=3,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=3, end=30,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=10)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=30, max_keep_ckpts=1))
work_dir = './work_dirs/demo/pretrain_vit-tiny_digits-0to4'
