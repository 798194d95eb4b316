# VPT-Shallow (prompts at the input of layer 1 only) on a VTAB-1k task,
# otherwise as vpt_deep_dinov2-b14.py.
#   python tools/train.py configs/vtab/vpt_shallow_dinov2-b14.py --task cifar100
_base_ = ['./vpt_deep_dinov2-b14.py']

model = dict(backbone=dict(prompt_cfg=dict(deep=False)))

# The official tuning script also tries larger lrs for VPT-Shallow
# (prompt_largerlr: the paper picked them for 6 of 24 tasks).
sweep_lrs = [1000.0, 500.0, 250.0, 100.0, 50.0, 25.0, 10.0, 5.0, 2.5, 1.0,
             0.5, 0.25, 0.1, 0.05]
