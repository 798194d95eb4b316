# Head-only baseline of SETR-PUP on ADE20K: the backbone frozen without
# prompts; only the PUP decode head and auxiliary heads train.
#   bash tools/dist_train.sh configs/setr/head-only_vit-l_ade20k.py 8
_base_ = ['../_base_/models/setr-pup_vit-l_ade20k.py']
