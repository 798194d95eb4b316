# Mlp-3: frozen backbone, a 3-layer MLP head (Linear, ReLU,
# BatchNorm, Dropout 0.1 hidden layers).
# ViT-B/16 (ImageNet-21k) on a VTAB-1k task, default task cifar100:
#   python tools/train.py configs/vtab/mlp-3_vit-b.py --task dmlab
# Same data, schedule and protocol as vpt_deep_vit-b.py; the protocol is
# the `tuning` key (vpt_mm/tuning/protocols.py).
_base_ = [
    '../_base_/models/vit-b16.py',
    '../_base_/datasets/vtab1k.py',
    '../_base_/schedules/vpt_sgd_100e.py',
    '../_base_/default_runtime.py',
]

model = dict(tuning=dict(type='Mlp', num_layers=3), head=dict(num_classes=100))

optim_wrapper = dict(optimizer=dict(lr=2.5, weight_decay=1e-4))
# Evaluate the test split once, after the last epoch.
train_cfg = dict(val_interval=100)
# The official linear-probe recipe (base-linear.yaml): batch 1024.
train_dataloader = dict(batch_size=1024)
