# VPT (a learnable pixel frame) on mmseg's own UperNet recipe for ConvNeXt-B
# on ADE20K: everything of
# mmseg::convnext/convnext-base_upernet_8xb2-amp-160k_ade20k-512x512.py
# (UPerHead + FCN auxiliary head, 512x512 crops, AdamW 1e-4 with stage-wise
# lr decay, mixed precision, 160k iterations, slide inference), with its
# mmpretrain ConvNeXt replaced by PromptedConvNeXt (the same arguments plus
# the frame) and the pretrained classifier file mmseg's config names loaded
# strictly (the output norms of stages 1-3 are not in it and start from
# LayerNorm's initialisation, as mmseg's own loading leaves them). The
# backbone is frozen: the frame and the heads train. Without a GPU the
# recipe's AmpOptimWrapper runs as CPUAmpOptimWrapper in bfloat16.
#   python tools/train.py configs/upernet/vpt_convnext-b_ade20k.py
_base_ = [
    'mmseg::convnext/convnext-base_upernet_8xb2-amp-160k_ade20k-512x512.py'
]

custom_imports = dict(imports=['vpt_mm'], allow_failed_imports=False)
runner_type = 'VPTRunner'
default_hooks = dict(finite_loss=dict(type='NonFiniteLossHook'))

model = dict(
    backbone=dict(
        type='PromptedConvNeXt',
        img_size=512,
        prompt_cfg=dict(num_tokens=5, dropout=0.0)))
