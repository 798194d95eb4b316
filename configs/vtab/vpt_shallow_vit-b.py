# VPT-Shallow on a VTAB-1k task, ViT-B/16 pre-trained on ImageNet-21k:
# prompts at the input of layer 1 only; otherwise as vpt_deep_vit-b.py.
#   python tools/train.py configs/vtab/vpt_shallow_vit-b.py --task dmlab
# Default task: cifar100. base_lr, weight decay and the prompt length are
# chosen per task on val200 by tools/sweep.py.
_base_ = ['./vpt_deep_vit-b.py']

model = dict(backbone=dict(prompt_cfg=dict(deep=False)))
