# Bias baseline (BitFit) of SETR-PUP on ADE20K: every bias term of the
# backbone trains, with the PUP decode head and auxiliary heads; no prompts.
#   bash tools/dist_train.sh configs/setr/bias_vit-l_ade20k.py 8
_base_ = ['../_base_/models/setr-pup_vit-l_ade20k.py']

model = dict(backbone=dict(trainable=[r'(^|\.)bias$']))
