# VPT + Bias: VPT-Deep prompts and every bias term of the backbone train
# (paper appendix); otherwise as vpt_deep_vit-b.py (default task cifar100).
#   python tools/train.py configs/vtab/vpt-bias_deep_vit-b.py --task dmlab
_base_ = ['./vpt_deep_vit-b.py']

model = dict(tuning=dict(type='VPT+Bias'))
