"""Write the model zoo page (docs/en/model_zoo.md): every config of
configs/, its backbone and pretrained checkpoint, its prompts, what it tunes
and what its files weigh, and the paper's number for that setting where the
paper has one.

Every count and size is computed on the config's model built without its
checkpoint (counts do not depend on the weights): the tuned parameters as
``count_params.py`` counts them, the per-task file as the bytes of the
tensors ``extract_tuned.py`` keeps (everything that trains), the training
checkpoint as ``VPTCheckpointHook`` writes it (weights without the frozen
backbone, plus the optimizer state). The suite regenerates the page and
compares it with the committed one (``tests/test_tools/test_model_zoo.py``).

Example:
    python tools/analysis_tools/model_zoo.py --out docs/en/model_zoo.md
    python tools/analysis_tools/model_zoo.py \
        --configs configs/vtab/vpt_deep_vit-b.py
"""
import argparse
import glob
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence

import torch.nn as nn

import vpt_mm  # noqa: F401  (compatibility fixes first, registration)
from vpt_mm.config import resolve_config
from vpt_mm.fileio import atomic_write_text
from vpt_mm.tuning import (
    checkpoint_sizes,
    count_parameters,
    model_for_accounting,
)
from vpt_mm.tuning.accounting import truncate_decimals
from vpt_mm.tuning.table import classifier_params

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FOLDERS = ('vtab', 'fgvc', 'custom', 'setr', 'upernet', 'demo')

#: The paper's Table 1 (ViT-B/16 pre-trained on ImageNet-21k): FGVC mean
#: over the 5 datasets and the VTAB-1k Natural / Specialized / Structured
#: group means. Quoted, not reproduced here.
PAPER = {
    'fgvc': {'Full': '88.54', 'Linear': '79.32', 'VPT-Shallow': '84.62',
             'VPT-Deep': '89.11'},
    'vtab': {'Full': '75.88 / 83.36 / 47.64',
             'Linear': '68.93 / 77.16 / 26.84',
             'VPT-Shallow': '76.81 / 79.66 / 46.98',
             'VPT-Deep': '78.48 / 82.43 / 54.98'},
}

#: Where each checkpoint path of the configs comes from.
SOURCES = {
    'checkpoints/vit-b16_in21k.pth': 'Google ViT-B/16 IN-21k, converted',
    'checkpoints/vit-l16_in21k.pth': 'Google ViT-L/16 IN-21k, converted',
    'checkpoints/vit-h14_in21k.pth': 'Google ViT-H/14 IN-21k, converted',
    'checkpoints/swin-b_in21k.pth': 'official Swin-B IN-21k, converted',
    'checkpoints/convnext-b_in21k.pth':
    'official ConvNeXt-B IN-21k, converted',
    'checkpoints/resnet-50_in1k.pth': 'torchvision ResNet-50 IN-1k, '
    'converted',
}


def source(checkpoint: Optional[str]) -> str:
    """A short description of where a configured checkpoint comes from."""
    if not checkpoint:
        return 'none (random)'
    if checkpoint in SOURCES:
        return SOURCES[checkpoint]
    match = re.match(r'checkpoints/timm/([^/]+)/', checkpoint)
    if match:
        return f'timm `{match.group(1)}`'
    if checkpoint.startswith('http'):
        return f"mmseg recipe's `{checkpoint.rsplit('/', 1)[-1]}`"
    if 'work_dirs/demo/' in checkpoint:
        return 'the demo\'s pre-training step'
    return f'`{checkpoint}`'


def method(path: str, cfg) -> str:
    """The protocol a config runs: its ``tuning`` (classification) or its
    name (segmentation)."""
    prompt = cfg.model.backbone.get('prompt_cfg')
    name = osp.basename(path)
    tuning = cfg.model.get('tuning')
    kind = tuning.type if tuning else None
    if kind is None:
        for prefix, label in (('vpt_deep', 'VPT-Deep'),
                              ('vpt_shallow', 'VPT-Shallow'),
                              ('vpt-deep', 'VPT-Deep'),
                              ('vpt-shallow', 'VPT-Shallow'),
                              ('linear-head_vpt_deep', 'VPT-Deep'),
                              ('full', 'Full'), ('bias', 'Bias'),
                              ('head-only', 'Head-only'),
                              ('vpt_', 'VPT (pixel frame)'),
                              ('pretrain', 'pre-training')):
            if name.startswith(prefix):
                return label
        return '-'
    if kind in ('VPT', 'VPT+Bias'):
        suffix = '+Bias' if kind == 'VPT+Bias' else ''
        if 'deep' not in prompt and 'layers' not in prompt and \
                cfg.model.backbone.type in ('PromptedConvNeXt',
                                            'PromptedResNet'):
            return 'VPT (pixel frame)' + suffix
        return ('VPT-Deep' if prompt.get('deep') else 'VPT-Shallow') + suffix
    if kind == 'Partial':
        return f'Partial-{tuning.k}'
    if kind == 'Mlp':
        return f'Mlp-{tuning.num_layers}'
    if kind == 'Adapter':
        return f'Adapter r={tuning.reduction}'
    return kind


def backbone_name(cfg) -> str:
    """The backbone's type and size."""
    backbone = cfg.model.backbone
    kind = backbone.type.split('.')[-1]
    size = backbone.get('model_name') or backbone.get('arch') or \
        backbone.get('depth')
    if isinstance(size, dict):
        size = 'tiny ({} layers)'.format(size.get('num_layers', '?'))
    return f'{kind} {size}' if size is not None else kind


def prompts(cfg) -> str:
    """The prompt length and where the prompts go."""
    prompt = cfg.model.backbone.get('prompt_cfg')
    if not prompt:
        return '-'
    p = prompt.get('num_tokens', 1)
    if cfg.model.backbone.type in ('PromptedConvNeXt', 'PromptedResNet'):
        return f'frame p={p}'
    if prompt.get('layers'):
        return f'layers {tuple(prompt.layers)} p={p}'
    return f"{'deep' if prompt.get('deep') else 'shallow'} p={p}"


def row(path: str) -> Dict[str, str]:
    """One model zoo row of a config file."""
    cfg = resolve_config(path)
    model = model_for_accounting(cfg)
    count = count_parameters(model)
    if hasattr(model, 'head'):  # classification: the paper's convention
        last = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
        head = classifier_params(model.head, last[-1].out_features)
    else:  # segmentation: the decode and auxiliary heads
        head = sum(v for k, v in count.tuned.items()
                   if k in ('decode_head', 'auxiliary_head'))
    body = count.total_tuned - head
    tuned_bytes = sum(p.numel() * p.element_size()
                      for p in model.parameters() if p.requires_grad)
    small, _ = checkpoint_sizes(model, cfg.optim_wrapper)
    init = cfg.model.backbone.get('init_cfg') or {}
    bench = osp.basename(osp.dirname(path))
    name = method(path, cfg)
    paper = '-'
    if bench in PAPER and osp.basename(path).endswith('_vit-b.py'):
        paper = PAPER[bench].get(name, '-')
    return {
        'config': f'`{osp.basename(path)}`',
        'method': name,
        'backbone': backbone_name(cfg),
        'pretrained': source(init.get('checkpoint')),
        'prompts': prompts(cfg),
        'tuned (w/o classifier)':
        f'{body:,} ({truncate_decimals(100.0 * body / count.backbone)}%)',
        'classifier': f'{head:,}',
        'per-task file': megabytes(tuned_bytes),
        'training ckpt': megabytes(small),
        'paper': paper,
    }


def megabytes(num: int) -> str:
    """Bytes as MB with 2 decimals (1 MB = 1e6 bytes)."""
    return f'{num / 1e6:.2f} MB'


def table(rows: Sequence[Dict[str, str]]) -> List[str]:
    """Markdown lines of the rows."""
    keys = list(rows[0])
    lines = ['| ' + ' | '.join(keys) + ' |',
             '|' + '---|' * len(keys)]
    lines += ['| ' + ' | '.join(r[k] for k in keys) + ' |' for r in rows]
    return lines


HEADER = """# Model zoo

Every config of `configs/`, as `tools/analysis_tools/model_zoo.py` computes
it (this page is its output; the suite regenerates it and compares). Counts
are the config's model as built, at its default task (VTAB-1k `cifar100`,
100 classes; FGVC `cub`, 200; ADE20K, 150):

- **tuned (w/o classifier)**: the parameters that train besides the
  classifier (the head's last linear layer), as the paper's Table 1 counts
  them: prompts, adapters, an MLP head's hidden layers, a side network,
  backbone parameters left trainable; their share of the backbone,
  truncated to two decimals as in the paper. For segmentation the
  classifier column is the decode and auxiliary heads;
- **per-task file**: the float32 bytes of every tensor that trains, what
  `extract_tuned.py` keeps for one task (the backbone for Full);
- **training ckpt**: `epoch_N.pth` / `iter_N.pth` as `VPTCheckpointHook`
  writes it, without the frozen backbone, with the optimizer state;
- **paper**: the paper's Table 1 figure for that protocol on ViT-B/16
  ImageNet-21k (FGVC: mean of the 5 datasets; VTAB-1k: Natural /
  Specialized / Structured means), **quoted from the paper, not reproduced
  here**: no run on the real datasets has been made with this package yet.
  `-` where the paper reports no number for the setting.

The pretrained checkpoints and the commands that make them:
[Checkpoints](user_guides/checkpoints.md).
"""

TITLES = {
    'vtab': 'VTAB-1k (`configs/vtab/`)', 'fgvc': 'FGVC (`configs/fgvc/`)',
    'custom': 'Your own dataset (`configs/custom/`)',
    'setr': 'ADE20K, SETR-PUP (`configs/setr/`)',
    'upernet': 'ADE20K, UperNet (`configs/upernet/`)',
    'demo': 'The demo (`configs/demo/`)',
}


def page(paths: Sequence[str]) -> str:
    """The whole page for the config files ``paths``."""
    parts = [HEADER]
    for folder in FOLDERS:
        mine = [p for p in paths if osp.basename(osp.dirname(p)) == folder]
        if not mine:
            continue
        parts.append(f'## {TITLES[folder]}\n')
        parts.append('\n'.join(table([row(p) for p in mine])) + '\n')
    return '\n'.join(parts)


def all_configs() -> List[str]:
    """Every config file of the folders of :data:`FOLDERS`, sorted."""
    return [p for folder in FOLDERS for p in sorted(
        glob.glob(osp.join(REPO, 'configs', folder, '*.py')))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--configs', nargs='+',
                        help='config files (default: every config)')
    parser.add_argument('--out', help='write the page here (default: '
                        'print it)')
    args = parser.parse_args()
    paths = [osp.abspath(p) for p in args.configs] if args.configs \
        else all_configs()
    text = page(paths)
    if args.out:
        atomic_write_text(args.out, text)
        print(f'Wrote {len(paths)} configs to {args.out}')
    else:
        print(text)


if __name__ == '__main__':
    main()
