"""Serving tuned tasks: build a task's model from a config and its tuned
file, classify images with one or many tasks on one backbone
(``tools/infer.py``)."""
from .inference import (
    ImageReader,
    VPTInferencer,
    copy_frozen_backbone,
    init_segmentor,
    load_task_model,
    parse_task_args,
)
from .multitask import (
    MultiTaskClassifier,
    masked_layer_forward,
    sharing_problem,
)

__all__ = [
    'ImageReader', 'MultiTaskClassifier', 'VPTInferencer',
    'copy_frozen_backbone', 'init_segmentor', 'load_task_model',
    'masked_layer_forward', 'parse_task_args', 'sharing_problem'
]
