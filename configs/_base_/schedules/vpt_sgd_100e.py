# The paper's schedule (Table 6): SGD, momentum 0.9, 10 warm-up epochs then
# cosine decay, 100 epochs.
#
# Learning rate: ``optimizer.lr`` holds the paper's *base* lr, defined for a
# total batch of 256. mmengine's ``auto_scale_lr`` is the one place that
# turns it into the lr actually used: lr = base_lr * total_batch / 256, with
# total_batch = number of processes x train_dataloader.batch_size.
# Task configs set ``optimizer.lr`` (the grid VPT / linear:
# {50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05}) and ``weight_decay``
# ({0.01, 0.001, 0.0001, 0}) from the validation sweep.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.25, momentum=0.9, weight_decay=1e-4))

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=10,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=90,
        eta_min=0.0,
        by_epoch=True,
        begin=10,
        end=100,
        convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=10)
val_cfg = dict()
test_cfg = dict()

auto_scale_lr = dict(base_batch_size=256, enable=True)
