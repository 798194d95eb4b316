"""t-SNE of a tuned model's final embeddings on a test set, one PNG coloured
by class (the paper's Fig. 11-12).

The embedding is what the head reads: the final [CLS] token for ViT
(pooled features for Swin and the ConvNets). The checkpoint is loaded
strictly, as tools/test.py loads it: a training checkpoint, or a tuned-only
.safetensors file on top of the config's pretrained backbone.

Example:
    python tools/analysis_tools/tsne.py configs/vtab/vpt_deep_vit-b.py \
        task.safetensors --task dmlab --out work_dirs/tsne_dmlab.png
"""
import argparse
import os.path as osp

import numpy as np
import torch
from mmengine.registry import DATASETS, MODELS
from mmengine.runner import Runner

from vpt_mm.checkpoints import load_model_checkpoint, task_of
from vpt_mm.config import add_config_args, config_from_args, local_loader
from vpt_mm.devices import add_device_arg
from vpt_mm.evaluation.figures import plot_tsne, tsne_embedding
from vpt_mm.fileio import write_json
from vpt_mm.prompts import collect_features


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument('checkpoint', help='.pth training checkpoint or '
                        'tuned-only .safetensors file')
    parser.add_argument('--out', required=True, help='output .png')
    parser.add_argument('--split', choices=('test', 'val'), default='test',
                        help='dataloader to embed (default: test)')
    parser.add_argument('--max-samples', type=int, default=2000,
                        help='embed at most this many images, evenly spread '
                        'over the split (default: 2000)')
    parser.add_argument('--seed', type=int, default=0, help='t-SNE seed')
    add_device_arg(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.max_samples < 4:
        raise SystemExit('--max-samples must be at least 4')
    cfg = config_from_args(args)
    model = MODELS.build(cfg.model)
    load_model_checkpoint(model, args.checkpoint,
                          cfg.get('allow_other_backbone', False),
                          task_of(cfg), cfg.get('allow_other_task', False))
    model.to(args.device).eval()
    loader_cfg = cfg[f'{args.split}_dataloader'].copy()
    dataset = DATASETS.build(loader_cfg.dataset)
    if len(dataset) > args.max_samples:
        # Evenly spread over the split (split files are often sorted by
        # class).
        keep = np.linspace(0, len(dataset) - 1, args.max_samples)
        dataset = dataset.get_subset(sorted(set(keep.round().astype(int)
                                                .tolist())))
    loader_cfg.dataset = dataset
    loader_cfg.sampler = dict(type='DefaultSampler', shuffle=False)
    loader = Runner.build_dataloader(local_loader(loader_cfg))

    def batches():
        # The preprocessor moves the images to the model's device.
        for data in loader:
            data = model.data_preprocessor(data, False)
            labels = torch.cat([s.gt_label for s in data['data_samples']])
            yield data['inputs'], labels

    def embed(inputs):
        feats = model.extract_feat(inputs)[-1]
        return feats.flatten(2).mean(-1) if feats.dim() > 2 else feats

    feats, labels = collect_features(embed, batches())
    points = tsne_embedding(feats.numpy(), args.seed)
    classes = dataset.metainfo.get('classes')
    title = (f'{osp.basename(args.config)} + {osp.basename(args.checkpoint)}'
             f'\n{len(labels)} {args.split} images' +
             (f', task {cfg.task}' if cfg.get('task') else ''))
    drawn = plot_tsne(points, labels.numpy(), classes, title, args.out)
    write_json(dict(points=points.tolist(), labels=labels.tolist()),
               osp.splitext(args.out)[0] + '.json')
    print(f'Saved the t-SNE of {drawn["points"]} embeddings '
          f'({drawn["classes"]} classes) to {args.out}')


if __name__ == '__main__':
    main()
