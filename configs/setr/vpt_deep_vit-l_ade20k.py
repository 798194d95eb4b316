# VPT-Deep SETR-PUP on ADE20K (150 classes), ViT-L/16 pre-trained on
# ImageNet-21k, frozen; prompts + PUP decode head + auxiliary heads train.
#   bash tools/dist_train.sh configs/setr/vpt_deep_vit-l_ade20k.py 8
#   python tools/train.py configs/setr/vpt_deep_vit-l_ade20k.py
#   python tools/test.py configs/setr/vpt_deep_vit-l_ade20k.py CKPT [--tta]
# Recipe: ../_base_/models/setr-pup_vit-l_ade20k.py (mmseg's SETR-PUP ADE20K
# config, lr 0.005, heads' lr multiplier 1.0). The decoder only ever sees
# the patch tokens. Prompt lengths of the paper: 1, 5, 10, 50, 100, 200.
_base_ = ['../_base_/models/setr-pup_vit-l_ade20k.py']

model = dict(
    backbone=dict(
        type='PromptedViT',
        prompt_cfg=dict(num_tokens=50, deep=True, dropout=0.1)))
