"""Print backbone parameters, tuned parameters and their % of the backbone.

Example:
    python tools/analysis_tools/count_params.py \
        configs/_base_/models/vpt_vit-b16.py \
        --cfg-options model.backbone.prompt_cfg.deep=False
"""
import argparse

from mmengine.config import DictAction

from vpt_mm.runner import config_from_file
from vpt_mm.tuning import count_parameters, format_param_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file with a `model`')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    cfg = config_from_file(args.config, args.cfg_options)
    cfg.model.backbone.pop('init_cfg', None)
    from mmengine.registry import MODELS
    model = MODELS.build(cfg.model)
    print(format_param_count(count_parameters(model)))


if __name__ == '__main__':
    main()
