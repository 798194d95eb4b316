# VPT-Deep on a VTAB-1k task, CLIP ViT-B/16 image tower (OpenAI) from timm.
#   python tools/train.py configs/vtab/vpt_deep_clip-b16.py --task cifar100
# Default task: cifar100. The paper's protocol (Table 6), as for ViT-B/16
# (vpt_deep_vit-b.py): batch 128, SGD, 10 warm-up epochs + cosine, 100
# epochs; base_lr, weight decay and the prompt length are chosen per task
# on val200 by tools/sweep.py (the values here are only a starting point).
_base_ = [
    '../_base_/models/vpt_timm_clip-b16.py',
    '../_base_/datasets/vtab1k.py',
    '../_base_/schedules/vpt_sgd_100e.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(prompt_cfg=dict(num_tokens=50, deep=True, dropout=0.1)),
    head=dict(num_classes=100))

# Prompt lengths tools/sweep.py searches by default (paper Sec. 4.1).
prompt_lengths = [1, 5, 10, 50, 100, 200]

optim_wrapper = dict(optimizer=dict(lr=2.5, weight_decay=1e-4))
# Evaluate the test split once, after the last epoch.
train_cfg = dict(val_interval=100)
