"""Print backbone parameters, tuned parameters and their % of the backbone,
and the size of the config's training checkpoints.

Example:
    python tools/analysis_tools/count_params.py \
        configs/_base_/models/vpt_vit-b16.py \
        --cfg-options model.backbone.prompt_cfg.deep=False
"""
import argparse

from vpt_mm.config import add_config_args, config_from_args
from vpt_mm.tuning import (
    checkpoint_sizes,
    count_parameters,
    format_param_count,
    model_for_accounting,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser)
    args = parser.parse_args()
    cfg = config_from_args(args)
    model = model_for_accounting(cfg)
    print(format_param_count(count_parameters(model)))
    if 'optim_wrapper' in cfg:
        small, whole = checkpoint_sizes(model, cfg.optim_wrapper)
        backbone = sum(v.numel() * v.element_size()
                       for v in model.backbone.state_dict().values())
        print(f'training checkpoint (weights + optimizer state): '
              f'{small / 1e6:.2f} MB = {small / backbone:.3f}x the backbone '
              f'tensors ({backbone / 1e6:.1f} MB); with the frozen backbone '
              f'(save_frozen=True): {whole / 1e6:.1f} MB')


if __name__ == '__main__':
    main()
