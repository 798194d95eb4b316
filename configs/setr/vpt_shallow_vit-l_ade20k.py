# VPT-Shallow SETR-PUP on ADE20K: prompts at the input of layer 1 only;
# otherwise as vpt_deep_vit-l_ade20k.py.
#   bash tools/dist_train.sh configs/setr/vpt_shallow_vit-l_ade20k.py 8
_base_ = ['./vpt_deep_vit-l_ade20k.py']

model = dict(backbone=dict(prompt_cfg=dict(deep=False)))
