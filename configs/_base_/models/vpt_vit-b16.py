# ViT-B/16 with VPT-Deep prompts (p=50) and a linear head: the baselines'
# model (./vit-b16.py) with the prompted backbone and the VPT protocol.
# The backbone is loaded strictly from an mmpretrain-format checkpoint made
# by tools/model_converters/ (see docs/en/user_guides/checkpoints.md); only the prompt
# keys may be missing from it. Task configs set head.num_classes.
_base_ = ['./vit-b16.py']

model = dict(
    tuning=dict(type='VPT'),
    backbone=dict(
        type='PromptedViT',
        prompt_cfg=dict(num_tokens=50, deep=True, dropout=0.1)))
