# VPT-Deep ViT-B/16 (ImageNet-21k) on your own images, in mmpretrain's
# ImageFolder layout (``CustomDataset`` without an annotation file):
#
#   data/my_dataset/train/<class name>/*.jpg
#   data/my_dataset/val/<class name>/*.jpg
#
# The classes are the folder names, sorted; set ``num_classes`` below to
# their number in ``model.head.num_classes`` (NumClassesCheckHook stops a
# run whose head disagrees with the dataset):
#   python tools/train.py configs/custom/vpt_deep_vit-b_imagefolder.py \
#       --cfg-options data_root=data/my_dataset model.head.num_classes=37
# Guide: docs/en/user_guides/own_dataset.md.
_base_ = [
    '../_base_/models/vpt_vit-b16.py',
    '../_base_/schedules/vpt_sgd_100e.py',
    '../_base_/default_runtime.py',
]

data_root = 'data/my_dataset'

# VPT-Deep, p=50, prompt dropout 0.1 (the model base's); another base of
# configs/_base_/models/ (vpt_swin-b.py, vpt_convnext-b.py, vpt_resnet-50.py)
# gives that backbone with the same data.
model = dict(head=dict(num_classes=3))

# The FGVC pipeline: shorter side to 256, a random 224 crop and a flip for
# training, the center 224 crop for evaluation.
train_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
         interpolation='bilinear'),
    dict(type='RandomCrop', crop_size=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
         interpolation='bilinear'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=False,
    pin_memory=True,
    dataset=dict(type='CustomDataset', data_root=data_root,
                 data_prefix='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=False,
    pin_memory=True,
    dataset=dict(type='CustomDataset', data_root=data_root,
                 data_prefix='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=2.5, weight_decay=1e-4))
train_cfg = dict(val_interval=10)
