# Full fine-tuning: every backbone parameter trains.
# ViT-B/16 (ImageNet-21k) on a VTAB-1k task, default task cifar100:
#   python tools/train.py configs/vtab/full_vit-b.py --task dmlab
# Same data as vpt_deep_vit-b.py; the protocol is the `tuning` key
# (vpt_mm/tuning/protocols.py).
_base_ = [
    '../_base_/models/vit-b16.py',
    '../_base_/datasets/vtab1k.py',
    '../_base_/schedules/full_adamw_100e.py',
    '../_base_/default_runtime.py',
]

model = dict(tuning=dict(type='Full'), head=dict(num_classes=100))

# The official Full recipe (configs/_base_/schedules/full_adamw_100e.py:
# AdamW, decay 0.01 except biases and norms, 5 warm-up epochs) and batch
# (base-finetune.yaml: 384); tools/sweep.py searches its sweep_lrs.
train_dataloader = dict(batch_size=384)
