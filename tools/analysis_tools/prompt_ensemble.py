"""Prompt ensembling (paper appendix): k prompt sets of one task (e.g. k
seeds' tuned files) in one forward pass over the test set, probabilities
averaged; prints each member's top-1, their mean and best, and the
ensemble's.

Example:
    python tools/analysis_tools/prompt_ensemble.py \
        configs/demo/vpt-deep_vit-tiny_digits-5to9.py s0.safetensors \
        s1.safetensors s2.safetensors s3.safetensors s4.safetensors
"""
import argparse
import os.path as osp

import numpy as np
import torch
from mmengine.registry import DATASETS

from vpt_mm.apis import VPTInferencer
from vpt_mm.config import add_config_args, config_from_args
from vpt_mm.devices import add_device_arg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument('files', nargs='+', help='tuned-only files (or '
                        'training checkpoints) of one task')
    parser.add_argument('--batch-size', type=int, default=64)
    add_device_arg(parser)
    args = parser.parse_args()
    if len(args.files) < 2:
        parser.error('an ensemble needs two or more files')
    cfg = config_from_args(args)
    name = cfg.get('task', None) or osp.splitext(osp.basename(args.config))[0]
    members = {f'member{k}': path for k, path in enumerate(args.files)}
    inferencer = VPTInferencer(
        cfg, dict(members, ensemble=list(args.files)), args.device)
    dataset_cfg = cfg.test_dataloader.dataset.copy()
    dataset_cfg.pipeline = []
    dataset = DATASETS.build(dataset_cfg)
    samples = [dataset[i] for i in range(len(dataset))]
    inputs = [s['img'] if 'img' in s else s['img_path'] for s in samples]
    labels = torch.tensor([int(s['gt_label']) for s in samples])
    probs = inferencer.probabilities(inputs, args.batch_size)
    top1 = {k: float((p.argmax(-1) == labels).float().mean() * 100)
            for k, p in probs.items()}
    singles = [top1[k] for k in members]
    print(f'{name}: {len(labels)} test images, {len(members)} prompt sets')
    for k, path in members.items():
        print(f'  {k} {path}: top-1 {top1[k]:.2f}%')
    print(f'  mean of the single runs  {np.mean(singles):.2f}%')
    print(f'  best single run          {max(singles):.2f}%')
    print(f'  ensemble (mean probs)    {top1["ensemble"]:.2f}%')


if __name__ == '__main__':
    main()
