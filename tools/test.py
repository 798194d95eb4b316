"""Evaluate a checkpoint: a full mmengine checkpoint, or a tuned-only
``.safetensors`` file on top of the config's pretrained backbone.

Examples:
    python tools/test.py CONFIG work_dirs/x/epoch_100.pth
    python tools/test.py CONFIG task_prompts.safetensors
"""
import argparse

from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from vpt_mm.checkpoints import load_tuned
from vpt_mm.runner import (
    add_common_args,
    load_config,
    setup_distributed,
    teardown_distributed,
    write_json,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a model')
    add_common_args(parser)
    parser.add_argument('checkpoint', help='checkpoint (.pth or tuned-only '
                        '.safetensors)')
    parser.add_argument('--out', help='dump the metrics to this json file')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = load_config(args)
    tuned_only = args.checkpoint.endswith('.safetensors')
    cfg.load_from = None if tuned_only else args.checkpoint
    setup_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    if tuned_only:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        model.init_weights()
        load_tuned(model, args.checkpoint)
    metrics = runner.test()
    if args.out and runner.rank == 0:
        write_json(metrics, args.out)
    teardown_distributed()


if __name__ == '__main__':
    main()
