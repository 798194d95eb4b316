# Full fine-tuning: every backbone parameter trains, on DINOv2 ViT-B/14 with 4 register
# tokens (timm's `vit_base_patch14_reg4_dinov2.lvd142m`, the backbone of
# vpt_deep_dinov2-b14.py without prompts: TimmViT); otherwise as
# full_vit-b.py (its protocol, batch and schedule).
#   python tools/train.py configs/vtab/full_dinov2-b14.py --task dmlab
_base_ = ['./full_vit-b.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmViT',
        model_name='vit_base_patch14_reg4_dinov2',
        img_size=224,
        out_type='cls_token',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/timm/vit_base_patch14_reg4_dinov2.lvd142m/'
            'model.safetensors')))
