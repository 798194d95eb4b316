# VPT-Deep on mmseg's own UperNet recipe for Swin-B (ImageNet-22k, window 7)
# on ADE20K: everything of
# mmseg::swin/swin-base-patch4-window7-in22k-pre_upernet_8xb2-160k_ade20k-512x512.py
# (UPerHead + FCN auxiliary head, 512x512 crops, AdamW 6e-5, 160k
# iterations, slide inference), with its Swin replaced by PromptedSwin: the
# same network in mmpretrain's arguments (mmseg's Swin takes others), its
# prompts, and the pretrained file mmseg's config names, loaded strictly
# (its final classification norm is unused and the per-stage output norms
# start from LayerNorm's initialisation, as mmseg's own loading leaves
# them). The backbone is frozen: prompts and heads train.
#   python tools/train.py configs/upernet/vpt_deep_swin-b_ade20k.py
#   bash tools/dist_train.sh configs/upernet/vpt_deep_swin-b_ade20k.py 8
_base_ = [
    'mmseg::swin/'
    'swin-base-patch4-window7-in22k-pre_upernet_8xb2-160k_ade20k-512x512.py'
]

custom_imports = dict(imports=['vpt_mm'], allow_failed_imports=False)
# vpt_mm's runner (strict, verified loading; exact resume) and the stop at a
# non-finite loss, as in configs/_base_/default_runtime.py.
runner_type = 'VPTRunner'
default_hooks = dict(finite_loss=dict(type='NonFiniteLossHook'))

model = dict(
    backbone=dict(
        _delete_=True,
        type='PromptedSwin',
        # mmseg's embed_dims=128, depths=[2, 2, 18, 2],
        # num_heads=[4, 8, 16, 32], patch_size=4, mlp_ratio=4, qkv_bias
        arch='base',
        img_size=512,
        window_size=7,
        out_indices=(0, 1, 2, 3),
        out_type='featmap',
        drop_rate=0.0,
        drop_path_rate=0.3,
        prompt_cfg=dict(num_tokens=10, deep=True, dropout=0.1),
        init_cfg=dict(
            type='Pretrained', checkpoint={{_base_.checkpoint_file}})))
