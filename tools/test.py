"""Evaluate a checkpoint: a full mmengine checkpoint, or a tuned-only
``.safetensors`` file on top of the config's pretrained backbone.

Examples:
    python tools/test.py CONFIG work_dirs/x/epoch_100.pth
    python tools/test.py CONFIG task_prompts.safetensors
    python tools/test.py configs/setr/vpt_deep_vit-l_ade20k.py CKPT --tta
"""
import argparse

from vpt_mm.config import add_common_args, load_config
from vpt_mm.dist import setup_distributed, teardown_distributed
from vpt_mm.engine import build_runner
from vpt_mm.fileio import write_json


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a model')
    add_common_args(parser)
    parser.add_argument('checkpoint', help='checkpoint (.pth or tuned-only '
                        '.safetensors)')
    parser.add_argument('--out', help='dump the metrics to this json file')
    parser.add_argument(
        '--allow-other-backbone', action='store_true',
        help='evaluate a tuned-only file on a backbone other than the one '
        'it was trained on (a deliberate transfer; by default an error)')
    parser.add_argument(
        '--allow-other-task', action='store_true',
        help='evaluate a file on a task (or classes) other than the one it '
        'was trained on (a deliberate transfer; by default an error)')
    parser.add_argument(
        '--tta', action='store_true',
        help="test-time augmentation with the config's tta_model and "
        'tta_pipeline (mmseg: multi-scale + flip)')
    return parser.parse_args()


def use_tta(cfg) -> None:
    """Wrap the model in the config's ``tta_model`` and test on its
    ``tta_pipeline``, as mmseg's and mmpretrain's ``--tta`` do."""
    missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
    if missing:
        raise ValueError(f'--tta needs {missing} in the config')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def main() -> None:
    args = parse_args()
    cfg = load_config(args)
    # Loaded strictly by VPTRunner: a .pth must fit the model exactly and
    # match its checksum; a .safetensors file goes on top of the config's
    # pretrained backbone, which must be the one it was trained on.
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.allow_other_backbone:
        cfg.allow_other_backbone = True
    if args.allow_other_task:
        cfg.allow_other_task = True
    if args.tta:
        use_tta(cfg)
    setup_distributed(cfg)
    runner = build_runner(cfg)
    metrics = runner.test()
    if args.out and runner.rank == 0:
        write_json(metrics, args.out)
    teardown_distributed()


if __name__ == '__main__':
    main()
