# The FGVC datasets from their json split files (vpt_mm/datasets/fgvc.py,
# docs/en/user_guides/benchmarks.md; tools/dataset_converters/prepare_fgvc.py writes the files).
# The dataset is chosen by the top-level ``task`` key (``--task cub``),
# which also sets the head's num_classes.
#
# Splits: as the official code, the final runs train on ``train`` (the
# official trainer adds val to training for VTAB only) and evaluate the test
# set after the last epoch; tools/sweep.py trains on train and scores val.
# Pipeline (the official one): decode with PIL, scale the shorter side to
# 256 keeping the aspect ratio (bilinear, PIL), then a random 224 crop and a
# horizontal flip for training, a center 224 crop for evaluation.
task = 'cub'
dataset_type = 'FGVC'
data_root = 'data/fgvc'

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
    dataset=dict(
        type=dataset_type,
        task=task,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    dataset=dict(
        type=dataset_type,
        task=task,
        data_root=data_root,
        split='test',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
