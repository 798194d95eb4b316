"""Time one training step (forward, backward, SGD step) of an mmpretrain
classifier with a PromptedViT backbone: full fine-tuning vs VPT, in one run.

Prints ms per step and the ratio of each protocol to full fine-tuning.

Example:
    python tools/analysis_tools/benchmark_train_step.py --arch b \
        --batch-size 8 --num-tokens 50
"""
import argparse
import time

import torch
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import vpt_mm  # noqa: F401  (compatibility fixes, registration)


def build(arch: str, patch: int, prompt_cfg: dict = None):
    """A classifier: PromptedViT with ``prompt_cfg``, else a plain ViT."""
    backbone = dict(type='VisionTransformer', arch=arch, patch_size=patch)
    if prompt_cfg is not None:
        backbone.update(type='PromptedViT', prompt_cfg=prompt_cfg)
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=backbone,
            head=dict(
                type='LinearClsHead',
                num_classes=100,
                in_channels=MODELS.get('PromptedViT').arch_zoo[arch]
                ['embed_dims'],
                loss=dict(type='CrossEntropyLoss'))))
    model.train()
    return model


def time_step(model, batch: int, size: int, repeats: int,
              device: str) -> float:
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, size, size, device=device)
    samples = [DataSample().set_gt_label(i % 100) for i in range(batch)]

    def step():
        optim.zero_grad()
        loss = sum(model(x, samples, mode='loss').values())
        loss.backward()
        optim.step()

    step()  # warm-up
    times = []
    for _ in range(repeats):
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='b')
    parser.add_argument('--patch-size', type=int, default=16)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--num-tokens', type=int, default=50)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()
    p = args.num_tokens
    protocols = [
        ('full fine-tuning', None),
        (f'VPT-Shallow p={p}', dict(num_tokens=p, deep=False)),
        (f'VPT-Deep p={p}', dict(num_tokens=p, deep=True)),
        ('VPT-Deep p=1', dict(num_tokens=1, deep=True)),
    ]
    results = []
    for name, prompt_cfg in protocols:
        model = build(args.arch, args.patch_size, prompt_cfg)
        ms = time_step(model, args.batch_size, args.img_size, args.repeats,
                       args.device)
        results.append((name, ms))
        del model
    base = results[0][1]
    print(f'ViT-{args.arch}/{args.patch_size} at {args.img_size}, batch '
          f'{args.batch_size}, {args.device}, median of {args.repeats}')
    for name, ms in results:
        print(f'{name:<20} {ms:9.1f} ms/step   {ms / base:5.2f}x full')


if __name__ == '__main__':
    main()
