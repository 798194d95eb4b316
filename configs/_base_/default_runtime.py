# Runtime shared by every vpt_mm config (mmpretrain scope by default).
default_scope = 'mmpretrain'
custom_imports = dict(imports=['vpt_mm'], allow_failed_imports=False)
# Strict, verified checkpoint loading and exact resume (vpt_mm/engine.py),
# for vpt_mm's tools and mmpretrain's / mmseg's own alike.
runner_type = 'VPTRunner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='VPTCheckpointHook', interval=10, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
    # Stops at the first NaN/inf loss, naming iteration, loss and lr;
    # switch off with --cfg-options default_hooks.finite_loss=None.
    finite_loss=dict(type='NonFiniteLossHook'),
)

# Fails early if the head's num_classes differs from a dataset's classes.
custom_hooks = [dict(type='NumClassesCheckHook')]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)

log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
