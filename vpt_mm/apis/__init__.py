"""Serving tuned tasks: build a task's model from a config and its tuned
file, classify images with one or many tasks on one backbone."""
from .multitask import MultiTaskClassifier, masked_layer_forward

__all__ = ['MultiTaskClassifier', 'masked_layer_forward']
