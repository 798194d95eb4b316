# scikit-learn's bundled 8x8 digits (the CPU demo). Task configs set the
# ``digits`` of the train/val/test datasets.
dataset_type = 'SklearnDigits'
pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    dataset=dict(type=dataset_type, digits=[0, 1, 2, 3, 4], split='train',
                 pipeline=pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=0,
    dataset=dict(type=dataset_type, digits=[0, 1, 2, 3, 4], split='test',
                 pipeline=pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
