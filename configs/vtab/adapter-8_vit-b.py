# Adapter: Pfeiffer adapters (reduction 8; the paper also uses 64 and
# 256) after the FFN of every block; up-projection zero, down random.
# ViT-B/16 (ImageNet-21k) on a VTAB-1k task, default task cifar100:
#   python tools/train.py configs/vtab/adapter-8_vit-b.py --task dmlab
# Same data, schedule and protocol as vpt_deep_vit-b.py; the protocol is
# the `tuning` key (vpt_mm/tuning/protocols.py).
_base_ = [
    '../_base_/models/vit-b16.py',
    '../_base_/datasets/vtab1k.py',
    '../_base_/schedules/vpt_sgd_100e.py',
    '../_base_/default_runtime.py',
]

model = dict(
    tuning=dict(type='Adapter', reduction=8), head=dict(num_classes=100))

optim_wrapper = dict(optimizer=dict(lr=2.5, weight_decay=1e-4))
# Evaluate the test split once, after the last epoch.
train_cfg = dict(val_interval=100)
