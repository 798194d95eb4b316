# VPT-Deep on ADE20K with a frozen DINOv2 ViT-B/14 (timm's
# `vit_base_patch14_reg4_dinov2.lvd142m`) read by the linear head of
# DINOv2's segmentation evaluation (LinearBNHead: batch norm and a 1x1
# convolution on the last layer's normalised patch tokens) instead of
# SETR-PUP; data, crops, schedule and optimiser as
# vpt_deep_dinov2-b14_ade20k.py, no auxiliary heads.
#   python tools/train.py configs/setr/linear-head_vpt_deep_dinov2-b14_ade20k.py
_base_ = ['./vpt_deep_dinov2-b14_ade20k.py']

model = dict(
    backbone=dict(out_indices=(11, ), final_norm=True),
    decode_head=dict(
        _delete_=True,
        type='LinearBNHead',
        in_channels=768,
        channels=768,
        in_index=0,
        num_classes=150,
        dropout_ratio=0.0,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=None)
