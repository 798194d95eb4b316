# The FGVC datasets from their json split files (vpt_mm/datasets/fgvc.py,
# README "Data"; tools/dataset_converters/prepare_fgvc.py writes the files).
# The dataset is chosen by the top-level ``task`` key (``--task cub``),
# which also sets the head's num_classes.
#
# Splits: the final protocol trains on train + val (``trainval``) and
# evaluates the test set after the last epoch; tools/sweep.py trains on
# train and scores val. Pipeline: train resize 256x256 (bicubic), random
# crop 224, horizontal flip; eval resize 256x256, center crop 224.
task = 'cub'
dataset_type = 'FGVC'
data_root = 'data/fgvc'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 256), interpolation='bicubic'),
    dict(type='RandomCrop', crop_size=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 256), interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

# The training pipeline is random (crop, flip) and runs in the workers:
# workers that persist across epochs carry random states a checkpoint cannot
# hold, so they start afresh every epoch and --resume stays exact.
train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=False,
    pin_memory=True,
    dataset=dict(
        type=dataset_type,
        task=task,
        data_root=data_root,
        split='trainval',
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
