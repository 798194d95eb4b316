"""Small-ViT overrides of the real configs/setr/ configs, shared by the
segmentation tests."""
import os.path as osp

import torch
from mmpretrain.models.backbones import VisionTransformer

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
ARCH = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64)
SETR = ('vpt_deep', 'vpt_shallow', 'full', 'head-only', 'bias')


def write_pretrained(path: str, arch: dict = ARCH) -> str:
    """A random 'pretrained' 224x224 ViT (14x14 position grid, final norm
    included) in mmpretrain's keys, like the converters write."""
    vit = VisionTransformer(arch=arch, img_size=224, patch_size=16)
    torch.save(dict(state_dict=vit.state_dict()), path)
    return path


def _data(data_root: str) -> str:
    """The data part of the small segmentation configs: the generated
    ADE20K under ``data_root``, random 64-pixel training crops
    (``crop_size``), 80x48 test images, a few iterations."""
    return f"""
data_root = {data_root!r}
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(80, 48), keep_ratio=False),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size=2, dataset=dict(
    data_root=data_root, pipeline=train_pipeline), **loader)
val_dataloader = dict(batch_size=1, dataset=dict(
    data_root=data_root, pipeline=test_pipeline), **loader)
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=4)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=4))
"""


def write_seg_config(path: str, name: str, ckpt: str, data_root: str,
                     extra: str = '', arch: dict = ARCH,
                     backbone: str = '', config: str = '',
                     crop: int = 64) -> str:
    """``configs/setr/<name>_vit-l_ade20k.py`` (or ``config``) with a
    4-layer 32-wide ViT (or ``arch``, its first 4 layers read out; or the
    ``backbone`` arguments given), ``crop`` x ``crop`` crops (64), slide
    inference with windows of that size and stride 2/3 of it, a few
    iterations, and the data under ``data_root``."""
    base = osp.join(REPO, 'configs', 'setr',
                    config or f'{name}_vit-l_ade20k.py')
    backbone = backbone or (f"arch=dict(_delete_=True, **{arch!r}), "
                            'img_size=crop_size')
    stride = crop * 2 // 3
    text = f"""
_base_ = [{base!r}]
crop_size = ({crop}, {crop})
norm_cfg = dict(type='SyncBN', requires_grad=True)
aux = dict(type='SETRUPHead', in_channels={arch['embed_dims']}, channels=16,
           num_classes=150, dropout_ratio=0, norm_cfg=norm_cfg, num_convs=1,
           up_scale=4, kernel_size=3, align_corners=False,
           loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                            loss_weight=0.4))
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict({backbone}, out_indices=(0, 1, 2, 3),
                  init_cfg=dict(checkpoint={ckpt!r})),
    decode_head=dict(in_channels={arch['embed_dims']}, channels=16),
    auxiliary_head=[dict(aux, in_index=i) for i in range(3)],
    test_cfg=dict(mode='slide', crop_size=crop_size,
                  stride=({stride}, {stride})))
{_data(data_root)}
{extra}
"""
    with open(path, 'w') as f:
        f.write(text)
    return path


def build_seg_model(config_path: str):
    """Build and initialise (pretrained backbone) the segmentor of a
    config, SyncBN reverted to BN as a single process does."""
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import MODELS

    from vpt_mm.config import config_from_file
    cfg = config_from_file(config_path)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    return cfg, model


def write_upernet_config(path: str, config: str, backbone: str,
                         widths: tuple, data_root: str, extra: str = '',
                         crop: int = 64) -> str:
    """``configs/upernet/<config>`` with the ``backbone`` arguments given
    (a small arch), ``crop`` x ``crop`` crops, small UPerHead / FCN heads
    for stage ``widths``, slide inference with windows of the crop size,
    the generated data under ``data_root`` and a few iterations."""
    base = osp.join(REPO, 'configs', 'upernet', config)
    text = f"""
_base_ = [{base!r}]
crop_size = ({crop}, {crop})
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict({backbone}),
    decode_head=dict(in_channels={list(widths)!r}, channels=16),
    auxiliary_head=dict(in_channels={widths[2]}, channels=8),
    test_cfg=dict(mode='slide', crop_size=crop_size,
                  stride=({crop * 2 // 3}, {crop * 2 // 3})))
{_data(data_root)}
{extra}
"""
    with open(path, 'w') as f:
        f.write(text)
    return path
