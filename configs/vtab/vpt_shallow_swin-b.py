# VPT-Shallow on an VTAB-1k task, Swin-B (window 7, 224) pre-trained on
# ImageNet-21k: prompts enter at the first block and flow through every
# stage, carried through patch merging as in the official code (the paper's
# text drops them: backbone prompt_merging='drop'); otherwise as
# vpt_deep_swin-b.py.
#   python tools/train.py configs/vtab/vpt_shallow_swin-b.py --task dmlab
# Default task: cifar100. base_lr, weight decay and the prompt length are
# chosen per task on val200 by tools/sweep.py.
_base_ = ['./vpt_deep_swin-b.py']

model = dict(backbone=dict(prompt_cfg=dict(deep=False)))

# The official tuning script also tries larger lrs for VPT-Shallow
# (prompt_largerlr: the paper picked them for 6 of 24 tasks).
sweep_lrs = [1000.0, 500.0, 250.0, 100.0, 50.0, 25.0, 10.0, 5.0, 2.5, 1.0,
             0.5, 0.25, 0.1, 0.05]
