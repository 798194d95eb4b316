# VPT-Deep on a VTAB-1k task, DINOv2 ViT-B/14 with 4 register tokens (LVD-142M),
# timm's `vit_base_patch14_reg4_dinov2.lvd142m`; the protocol, grids and
# head of vpt_deep_vit-b.py (the paper's Table 6).
#   python tools/train.py configs/vtab/vpt_deep_dinov2-b14.py --task cifar100
# The backbone loads strictly from the file timm's hub holds for it
# (`model.safetensors` of `timm/vit_base_patch14_reg4_dinov2.lvd142m`), in
# timm's own layout: no conversion step (docs/en/user_guides/checkpoints.md). The data
# preprocessor's mean and std (ImageNet's, inherited) are DINOv2's own, as
# timm's pretrained config gives them (tested). The CLIP, SigLIP and EVA-02
# configs replace model_name, out_type, the checkpoint and the mean and std.
_base_ = ['./vpt_deep_vit-b.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='PromptedTimmViT',
        model_name='vit_base_patch14_reg4_dinov2',
        img_size=224,
        out_type='cls_token',
        prompt_cfg=dict(num_tokens=50, deep=True, dropout=0.1),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/timm/vit_base_patch14_reg4_dinov2.lvd142m/'
            'model.safetensors')))
