# Full fine-tuning: every backbone parameter trains.
# ViT-B/16 (ImageNet-21k) on a VTAB-1k task, default task cifar100:
#   python tools/train.py configs/vtab/full_vit-b.py --task dmlab
# Same data, schedule and protocol as vpt_deep_vit-b.py; the protocol is
# the `tuning` key (vpt_mm/tuning/protocols.py).
_base_ = [
    '../_base_/models/vit-b16.py',
    '../_base_/datasets/vtab1k.py',
    '../_base_/schedules/vpt_sgd_100e.py',
    '../_base_/default_runtime.py',
]

model = dict(tuning=dict(type='Full'), head=dict(num_classes=100))

optim_wrapper = dict(optimizer=dict(lr=0.001, weight_decay=1e-4))
# The paper's full fine-tuning grid, searched by tools/sweep.py.
sweep_lrs = [0.001, 0.0005, 0.0001, 0.005]
# Evaluate the test split once, after the last epoch.
train_cfg = dict(val_interval=100)
