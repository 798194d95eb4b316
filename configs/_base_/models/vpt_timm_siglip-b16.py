# SigLIP ViT-B/16 image tower (WebLI); no class token, so the patch mean is read, timm's `vit_base_patch16_siglip_224.webli`, with VPT-Deep prompts (p=50) and a
# linear head. The backbone loads strictly from the file timm's hub holds for
# it (`model.safetensors` of `timm/vit_base_patch16_siglip_224.webli`), in timm's own layout: no
# conversion step (README, "Checkpoints"). The data preprocessor's mean and
# std are left to the model (None: timm's pretrained config fills them in,
# vpt_mm.config.apply_model_normalisation). Task configs set num_classes.
model = dict(
    type='TunedClassifier',
    tuning=dict(type='VPT'),
    data_preprocessor=dict(
        type='ClsDataPreprocessor', mean=None, std=None, to_rgb=True),
    backbone=dict(
        type='PromptedTimmViT',
        model_name='vit_base_patch16_siglip_224',
        img_size=224,
        out_type='avg_featmap',
        prompt_cfg=dict(num_tokens=50, deep=True, dropout=0.1),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/timm/vit_base_patch16_siglip_224.webli/model.safetensors')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
)
