# SETR-PUP on ADE20K with an mmpretrain-layout ViT-L/16 (ImageNet-21k), the
# shared base of configs/setr/. The recipe is mmseg's own SETR-PUP ADE20K
# config, inherited through mmseg:: (512x512 crops, features of layers 10,
# 15, 20, 24 = out_indices (9, 14, 19, 23), PUP decode head + 3 auxiliary
# heads, 160k iterations, 2 images per GPU x 8, slide inference 512/341),
# with the paper's optimiser: lr 0.005 and the heads' lr multiplier 1.0
# (mmseg's is 10). The backbone here is frozen without prompts (head-only);
# each config under configs/setr/ picks its protocol by the backbone type.
_base_ = ['mmseg::setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py']

custom_imports = dict(imports=['vpt_mm'], allow_failed_imports=False)
# vpt_mm's runner (strict, verified loading; exact resume) and the stop at a
# non-finite loss, as in configs/_base_/default_runtime.py.
runner_type = 'VPTRunner'
default_hooks = dict(finite_loss=dict(type='NonFiniteLossHook'))

model = dict(
    backbone=dict(
        _delete_=True,
        type='FrozenViT',
        arch='l',
        img_size=(512, 512),
        patch_size=16,
        out_indices=(9, 14, 19, 23),
        out_type='featmap',
        # As mmseg's SETR: the heads normalise the features themselves.
        final_norm=False,
        drop_rate=0.0,
        drop_path_rate=0.0,
        # A 224x224 checkpoint made by tools/model_converters/; its position
        # embedding is resized to the 32x32 grid of a 512 crop on loading.
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/vit-l16_in21k.pth')))

optim_wrapper = dict(
    optimizer=dict(lr=0.005),
    paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=1.0)}))
