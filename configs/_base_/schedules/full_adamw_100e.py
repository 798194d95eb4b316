# The official Full fine-tuning recipe: AdamW (eps 1e-6) with weight decay
# 0.01 on every weight and none on biases and normalisation parameters,
# 5 warm-up epochs then cosine decay (per epoch, from lr 0), 100 epochs,
# batch 384. The official optimizer uses 0.01 whatever weight decay its
# sweep asks for, so the sweep searches the lr only (sweep_weight_decays).
# lr = base_lr * total_batch / 256 (auto_scale_lr), as for every protocol.
optim_wrapper = dict(
    optimizer=dict(
        type='AdamW', lr=0.001, betas=(0.9, 0.999), eps=1e-6,
        weight_decay=0.01),
    paramwise_cfg=dict(bias_decay_mult=0.0, norm_decay_mult=0.0))

param_scheduler = [dict(type='VPTWarmupCosineLR', warmup=5, total=100)]

train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=100)
val_cfg = dict()
test_cfg = dict()

auto_scale_lr = dict(base_batch_size=256, enable=True)

sweep_lrs = [0.001, 0.0005, 0.0001, 0.005]
sweep_weight_decays = [0.01]
