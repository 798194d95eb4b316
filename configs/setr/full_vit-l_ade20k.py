# Full fine-tuning baseline of SETR-PUP on ADE20K: no prompts, every backbone
# parameter trains (mmpretrain's VisionTransformer, same checkpoint keys).
#   bash tools/dist_train.sh configs/setr/full_vit-l_ade20k.py 8
# lr 0.005 as for the prompts; sweep it for this baseline (the paper's full
# fine-tuning grid for classification is much lower).
_base_ = ['../_base_/models/setr-pup_vit-l_ade20k.py']

model = dict(backbone=dict(type='mmpretrain.VisionTransformer'))
