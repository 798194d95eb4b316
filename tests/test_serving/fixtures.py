"""A tiny served setup on generated files: a config reading image files
(the own-dataset config on a 2-layer ViT at 32 pixels), a random stand-in
for its pretrained checkpoint, tuned-only files of several prompt lengths
and JPEG images."""
import os.path as osp

import numpy as np
from PIL import Image

from tests.test_tools.test_train import REPO

CLASSES = ['bird', 'cat', 'dog']
ARCH = dict(_delete_=True, embed_dims=32, num_layers=2, num_heads=2,
            feedforward_channels=64)


def write_config(tmp, standin: str = '') -> str:
    """The config file; its pretrained checkpoint is ``standin``."""
    base = osp.join(REPO, 'configs', 'custom',
                    'vpt_deep_vit-b_imagefolder.py')
    path = osp.join(tmp, 'served.py')
    with open(path, 'w') as f:
        f.write(f"""
_base_ = [{base!r}]
model = dict(
    backbone=dict(arch={ARCH!r}, img_size=32, patch_size=8,
                  prompt_cfg=dict(num_tokens=4),
                  init_cfg=dict(checkpoint={standin!r})),
    head=dict(in_channels=32, num_classes=3))
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(type='ResizeEdge', scale=36, edge='short', backend='pillow',
         interpolation='bilinear'),
    dict(type='CenterCrop', crop_size=32),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
""")
    return path


def make_setup(tmp, seed: int = 0) -> str:
    """The config with its stand-in checkpoint written (``seed`` decides
    the backbone)."""
    import vpt_mm  # noqa: F401
    from vpt_mm.config import config_from_file
    from vpt_mm.converters import (
        save_backbone_checkpoint,
        standin_backbone_state,
    )
    standin = osp.join(tmp, f'standin{seed}.pth')
    cfg_path = write_config(tmp, standin)
    cfg = config_from_file(cfg_path)
    save_backbone_checkpoint(standin_backbone_state(cfg, seed), standin,
                             f'random stand-in, seed {seed}')
    return cfg_path


def tuned_file(cfg_path: str, path: str, seed: int, **prompt) -> str:
    """A 'trained' task on the config's backbone (random prompts and head of
    the given prompt options), a tuned-only file of :data:`CLASSES`."""
    from tests.test_apis.test_inference import tuned_file as write
    return write(cfg_path, path, seed, classes=CLASSES, **prompt)


def write_images(folder: str, count: int, seed: int = 0):
    """``count`` random JPEGs of assorted sizes; returns their paths."""
    import os
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    paths = []
    for i in range(count):
        h, w = rng.randint(24, 64, size=2)
        img = rng.randint(0, 256, size=(h, w, 3), dtype=np.uint8)
        path = osp.join(folder, f'img{i}.jpg')
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths
