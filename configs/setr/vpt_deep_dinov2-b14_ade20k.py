# VPT-Deep SETR-PUP on ADE20K (150 classes) with a frozen DINOv2 ViT-B/14
# (4 registers; timm's `vit_base_patch14_reg4_dinov2.lvd142m`, its file in
# timm's layout): the recipe of vpt_deep_vit-l_ade20k.py with a 12-layer,
# 768-wide backbone.
#   python tools/train.py configs/setr/vpt_deep_dinov2-b14_ade20k.py
# The PUP decode head reads layer 12, the 3 auxiliary heads layers 3, 6, 9
# (as mmseg's SETR reads 4 of ViT-L's 24). 14-pixel patches: the 512x512
# training crops are padded to 518x518 (37x37 patches; padded pixels are
# ignored by the loss); test images are resized to a 518 short side and
# slide inference uses 518x518 windows, so every window is 37x37 patches
# (a side that is not a multiple of 14 is an error: --tta's scales are not
# supported). The data preprocessor's mean and std (ImageNet's, inherited)
# are DINOv2's own.
_base_ = ['./vpt_deep_vit-l_ade20k.py']

crop_size = (518, 518)
_aux_head = dict(
    type='SETRUPHead',
    in_channels=768,
    channels=256,
    num_classes=150,
    dropout_ratio=0,
    norm_cfg=dict(type='SyncBN', requires_grad=True),
    act_cfg=dict(type='ReLU'),
    num_convs=2,
    kernel_size=3,
    align_corners=False,
    loss_decode=dict(
        type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='PromptedTimmViT',
        model_name='vit_base_patch14_reg4_dinov2',
        img_size=crop_size,
        out_indices=(2, 5, 8, 11),
        out_type='featmap',
        # As mmseg's SETR: the heads normalise the features themselves.
        final_norm=False,
        prompt_cfg=dict(num_tokens=50, deep=True, dropout=0.1),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/timm/vit_base_patch14_reg4_dinov2.lvd142m/'
            'model.safetensors')),
    decode_head=dict(in_channels=768),
    auxiliary_head=[dict(_aux_head, in_index=i) for i in range(3)],
    test_cfg=dict(crop_size=crop_size, stride=(345, 345)))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 518), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
