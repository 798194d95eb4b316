# VPT-Deep on an FGVC dataset, Swin-B (window 7, 224) pre-trained on
# ImageNet-21k: prompts in every window of every block, each stage's at its
# own width, carried through patch merging as in the official code; the
# feature averages the final prompt and image tokens
# (vpt_mm/backbones/swin.py).
#   python tools/train.py configs/fgvc/vpt_deep_swin-b.py --task stanford_dogs
# Default task: cub. Paper protocol (Table 6): batch 128, SGD with
# lr = base_lr * total_batch / 256, 10 warm-up epochs + cosine, 100 epochs.
# base_lr, weight decay and the prompt length (prompt_lengths) are chosen per
# dataset on val by tools/sweep.py; the values here are only a starting point.
_base_ = [
    '../_base_/models/vpt_swin-b.py',
    '../_base_/datasets/fgvc.py',
    '../_base_/schedules/vpt_sgd_100e.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(prompt_cfg=dict(num_tokens=10, deep=True, dropout=0.1)),
    head=dict(num_classes=200))

# Prompt lengths tools/sweep.py searches by default (paper Sec. 4.4, Swin).
prompt_lengths = [1, 5, 10, 50]

optim_wrapper = dict(optimizer=dict(lr=2.5, weight_decay=1e-4))
# Evaluate the test split once, after the last epoch.
train_cfg = dict(val_interval=100)
