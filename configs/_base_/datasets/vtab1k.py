# VTAB-1k in its extracted layout (vpt_mm/datasets/vtab.py, docs/en/user_guides/benchmarks.md).
# The task is chosen by the top-level ``task`` key (``--task NAME`` of
# tools/train.py and tools/test.py), which also sets the head's num_classes.
#
# Splits: the final protocol trains on all 1000 images (train800val200) and
# evaluates the test set after the last epoch (the paper reports the final
# epoch); tools/sweep.py trains on train800 and scores val200 to choose the
# hyper-parameters. Pipeline: resize to 224x224, bilinear (the official
# VTAB pipeline's), ImageNet mean/std in the data preprocessor, no
# augmentation.
task = 'cifar100'
dataset_type = 'VTAB1k'
data_root = 'data/vtab-1k'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(224, 224), interpolation='bilinear'),
    dict(type='PackInputs'),
]
test_pipeline = train_pipeline

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    dataset=dict(
        type=dataset_type,
        task=task,
        data_root=data_root,
        split='train800val200',
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
