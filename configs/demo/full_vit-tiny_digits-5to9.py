# Demo baseline: full fine-tuning of the digits-0-4 ViT on the digits 5-9
# (every backbone parameter trains), with the official full fine-tuning
# optimiser (AdamW, eps 1e-6, no decay on biases and norms) and the VPT
# demo's 25-epoch schedule.
_base_ = ['./linear_vit-tiny_digits-5to9.py']

model = dict(tuning=dict(_delete_=True, type='Full'))
optim_wrapper = dict(
    _delete_=True,
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.01, eps=1e-6),
    paramwise_cfg=dict(bias_decay_mult=0.0, norm_decay_mult=0.0))
