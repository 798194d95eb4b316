"""Train a model from an mmengine config (mmpretrain or mmseg).

Examples:
    python tools/train.py configs/demo/vpt-deep_vit-tiny_digits-5to9.py
    bash tools/dist_train.sh CONFIG 8 --amp
"""
import argparse
import os.path as osp

from vpt_mm.amp import enable_amp
from vpt_mm.config import add_common_args, load_config
from vpt_mm.dist import setup_distributed, teardown_distributed
from vpt_mm.engine import build_runner
from vpt_mm.fileio import write_json


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model')
    add_common_args(parser)
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or from the latest one in the '
        'work dir if no path is given')
    parser.add_argument(
        '--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument(
        '--amp-dtype',
        choices=['float16', 'bfloat16'],
        help='dtype of --amp (default: float16 on CUDA, bfloat16 on CPU, '
        'the only one CPU supports)')
    parser.add_argument(
        '--deterministic',
        action='store_true',
        help='deterministic CUDA kernels (randomness.deterministic=True and '
        'CUBLAS_WORKSPACE_CONFIG): a run and its resume after a kill repeat '
        'an uninterrupted run bit for bit on a GPU too, somewhat slower; an '
        'operation with no deterministic CUDA kernel is then an error '
        'naming it. CPU runs are deterministic without it')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate during training')
    parser.add_argument(
        '--test',
        action='store_true',
        help='after training, evaluate the final model on the test '
        'dataloader and write the metrics to <work_dir>/test_metrics.json')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by total batch / auto_scale_lr.base_batch_size '
        '(the paper configs enable this already)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = load_config(args)
    if args.amp:
        enable_amp(cfg, args.amp_dtype)
    if args.deterministic:
        cfg.randomness = dict(cfg.get('randomness', None) or {},
                              deterministic=True)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    setup_distributed(cfg)
    runner = build_runner(cfg)
    runner.train()
    if args.test:
        metrics = runner.test()
        if runner.rank == 0:
            write_json(metrics, osp.join(cfg.work_dir, 'test_metrics.json'))
    teardown_distributed()


if __name__ == '__main__':
    main()
