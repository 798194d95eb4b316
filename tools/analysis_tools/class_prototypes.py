"""Compute class prototypes (mean final [CLS] embedding per class of the
training set, frozen backbone without prompts) for ``init='cls'``.

Example:
    python tools/analysis_tools/class_prototypes.py CONFIG protos.pt
    # then: --cfg-options model.backbone.prompt_cfg.init=cls \
    #   model.backbone.prompt_cfg.cls_init=protos.pt \
    #   model.backbone.prompt_cfg.num_tokens=<num classes>
"""
import argparse

import torch
from mmengine.runner import Runner

from vpt_mm.checkpoints import load_pretrained_backbone
from vpt_mm.config import add_config_args, config_from_args, local_loader
from vpt_mm.devices import add_device_arg
from vpt_mm.fileio import atomic_save
from vpt_mm.prompts import class_prototypes, collect_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument('out', help='output .pt file of shape (C, d)')
    add_device_arg(parser)
    args = parser.parse_args()
    cfg = config_from_args(args)
    from mmengine.registry import MODELS

    from vpt_mm.backbones import PromptedViT
    from vpt_mm.registry import PRETRAIN_MODELS

    backbone_cfg = cfg.model.backbone.copy()
    if not issubclass(PRETRAIN_MODELS.get(backbone_cfg.type), PromptedViT):
        parser.error('class prototypes are [CLS] features of a PromptedViT '
                     f'backbone; the config has {backbone_cfg.type}')
    backbone_cfg = PromptedViT.unprompted_cfg(
        dict(backbone_cfg, out_type='cls_token'))
    init_cfg = backbone_cfg.pop('init_cfg', None)
    backbone = MODELS.build(backbone_cfg)
    if init_cfg is None:
        parser.error('the config has no pretrained backbone (init_cfg)')
    load_pretrained_backbone(
        backbone, init_cfg['checkpoint'], prefix=init_cfg.get('prefix'))
    backbone.to(args.device).eval()
    # The preprocessor moves the images to the backbone's device.
    preprocessor = MODELS.build(cfg.model.data_preprocessor).to(args.device)
    loader_cfg = cfg.train_dataloader.copy()
    loader_cfg.sampler = dict(type='DefaultSampler', shuffle=False)
    loader = Runner.build_dataloader(local_loader(loader_cfg))

    def batches():
        for data in loader:
            data = preprocessor(data, training=False)
            labels = torch.cat([s.gt_label for s in data['data_samples']])
            yield data['inputs'], labels

    feats, labels = collect_features(lambda x: backbone(x)[-1], batches())
    protos = class_prototypes(feats, labels, cfg.model.head.num_classes)
    atomic_save(args.out, lambda tmp: torch.save(protos, tmp))
    print(f'Saved {tuple(protos.shape)} class prototypes to {args.out}')


if __name__ == '__main__':
    main()
