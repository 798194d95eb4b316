# Demo: VPT-Shallow transfer of the frozen digits-0-4 ViT to the digits 5-9:
# 8 prompts at the first layer's input only, and the linear head, train.
# Same schedule as the VPT-Deep demo.
_base_ = ['./vpt-deep_vit-tiny_digits-5to9.py']

model = dict(backbone=dict(prompt_cfg=dict(deep=False)))
