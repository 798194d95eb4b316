# Demo step 2: VPT-Deep transfer of the frozen digits-0-4 ViT to the digits
# 5-9 (other classes): only the prompts and the linear head train.
# Run configs/demo/pretrain_vit-tiny_digits-0to4.py first (tools/demo.py
# runs every step).
_base_ = [
    './_base_/vit-tiny_digits.py', '../_base_/datasets/sklearn_digits.py',
    '../_base_/schedules/vpt_sgd_100e.py', '../_base_/default_runtime.py'
]

pretrained = './work_dirs/demo/pretrain_vit-tiny_digits-0to4/epoch_30.pth'
model = dict(
    backbone=dict(
        type='PromptedViT',
        prompt_cfg=dict(num_tokens=8, deep=True, dropout=0.1),
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')))

digits = [5, 6, 7, 8, 9]
train_dataloader = dict(dataset=dict(digits=digits))
val_dataloader = dict(dataset=dict(digits=digits))
test_dataloader = val_dataloader

# The paper's schedule, shortened: 2 warm-up epochs, 25 in all.
optim_wrapper = dict(optimizer=dict(lr=10.0, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=2,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=23, by_epoch=True, begin=2, end=25,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=25, val_interval=10)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=25, max_keep_ckpts=1))
