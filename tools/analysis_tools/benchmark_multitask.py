"""Mixed-task batches against single-task ones: one batch spread over T
tasks on one backbone (vpt_mm.apis.MultiTaskClassifier) against the same
batch through one task's own model (fused form), timed interleaved in one
process; and the memory each added task costs.

The model is the config's (random weights; cost does not depend on them);
every task gets the config's prompts and head, with its own random values.

Example:
    python tools/analysis_tools/benchmark_multitask.py \
        configs/vtab/vpt_deep_vit-b.py --batch-size 64 --tasks 1 4 16
"""
import argparse
import os
import statistics
import time

import torch
from mmengine.registry import MODELS

from vpt_mm.apis import MultiTaskClassifier, copy_frozen_backbone
from vpt_mm.checkpoints import tuned_state_dict
from vpt_mm.config import add_config_args, config_from_args
from vpt_mm.devices import add_device_arg


def tensor_bytes(module: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--tasks', type=int, nargs='+', default=[1, 4, 16])
    parser.add_argument('--repeats', type=int, default=5)
    add_device_arg(parser)
    args = parser.parse_args()
    cfg = config_from_args(args)
    cfg.model.backbone.pop('init_cfg', None)
    device = torch.device(args.device)
    models = []
    for k in range(max(args.tasks)):
        torch.manual_seed(k)
        model = MODELS.build(cfg.model).eval()
        if models:
            copy_frozen_backbone(models[0], model)
        models.append(model.to(device))
    single = models[0]
    servers = {t: MultiTaskClassifier({f'task{k}': models[k]
                                       for k in range(t)}).to(device)
               for t in args.tasks}
    size = cfg.model.backbone.get('img_size', 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    channels = cfg.model.backbone.get('in_channels', 3)
    x = torch.randn(args.batch_size, channels, *size, device=device)
    plans = {t: [k % t for k in range(args.batch_size)] for t in args.tasks}

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize()

    def run_single():
        with torch.no_grad():
            single(x, mode='tensor')

    runs = {'one task, its own model (fused)': run_single}
    for t in args.tasks:
        runs[f'{t} task(s) mixed in the batch'] = (
            lambda t=t: servers[t](x, plans[t]))
    for fn in runs.values():  # warm-up
        fn()
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times['one task, its own model (fused)'])
    where = (torch.cuda.get_device_name(device) if device.type == 'cuda'
             else f'CPU, {os.cpu_count()} cores, '
             f'{torch.get_num_threads()} threads')
    print(f'{args.config}: batch {args.batch_size}, {size[0]}x{size[1]}, '
          f'{where}; median of {args.repeats} interleaved forwards')
    print(f'{"":<34} {"ms/img":>8} {"throughput":>11}')
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f'{name:<34} {1000 * med / args.batch_size:8.2f} '
              f'{base / med:10.2f}x')
    tuned = sum(v.numel() * v.element_size()
                for v in tuned_state_dict(single).values())
    first = tensor_bytes(servers[min(args.tasks)])
    print(f'memory: one task {first / 1e6:.1f} MB of tensors; one task\'s '
          f'tuned tensors (prompts + head) {tuned / 1e3:.1f} KB')
    low = min(args.tasks)
    for t in args.tasks:
        if t == low:
            continue
        added = (tensor_bytes(servers[t]) - first) / (t - low)
        print(f'  {t} tasks: {tensor_bytes(servers[t]) / 1e6:.1f} MB, '
              f'{added / 1e3:.1f} KB per added task '
              f'({added / tuned:.2f}x its tuned tensors)')


if __name__ == '__main__':
    main()
