# VPT on an VTAB-1k task, ConvNeXt-B pre-trained on ImageNet-21k: a learnable
# pixel frame of width p around the image (the frozen ConvNet sees
# (224 + 2p) x (224 + 2p)), plus a linear head (vpt_mm/backbones/convnets.py).
#   python tools/train.py configs/vtab/vpt_convnext-b.py --task dmlab
# Default task: cifar100. Paper protocol (Table 6): batch 128, SGD with
# lr = base_lr * total_batch / 256, 10 warm-up epochs + cosine, 100 epochs.
# base_lr, weight decay and the frame width p (prompt_lengths) are chosen per
# task on val200 by tools/sweep.py; the values here are only a starting point.
_base_ = [
    '../_base_/models/vpt_convnext-b.py',
    '../_base_/datasets/vtab1k.py',
    '../_base_/schedules/vpt_sgd_100e.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(prompt_cfg=dict(num_tokens=5)),
    head=dict(num_classes=100))

# Frame widths tools/sweep.py searches by default (paper Sec. 4.4, ConvNets).
prompt_lengths = [1, 3, 5, 7, 9, 11]
# The official ConvNet prompt grid (tune_vtab.py, prompt_resnet).
sweep_lrs = [5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05, 0.025, 0.01]

optim_wrapper = dict(optimizer=dict(lr=2.5, weight_decay=1e-4))
# Evaluate the test split once, after the last epoch.
train_cfg = dict(val_interval=100)
