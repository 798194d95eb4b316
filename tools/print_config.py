"""Print the config a run uses: the file (its ``_base_`` merged), the
``--cfg-options``, the benchmark task (datasets and the head's
``num_classes``) and the top-level ``data_root`` applied, as
``tools/train.py`` and every other tool resolve it
(:func:`vpt_mm.config.resolve_config`). mmpretrain's own
``print_config.py`` prints the file before the task is applied.

Examples:
    python tools/print_config.py configs/vtab/vpt_deep_vit-b.py --task dmlab
    python tools/print_config.py configs/fgvc/vpt_deep_vit-b.py \
        --cfg-options task=cub data_root=data/fgvc
"""
import argparse

import vpt_mm  # noqa: F401  (compatibility fixes first, registration)
from vpt_mm.config import add_config_args, config_from_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser)
    cfg = config_from_args(parser.parse_args())
    print(cfg.pretty_text)


if __name__ == '__main__':
    main()
