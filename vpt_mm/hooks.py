"""Hooks registered into mmpretrain's ``HOOKS``."""
from __future__ import annotations

from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from .registry import HOOKS


@HOOKS.register_module()
class NumClassesCheckHook(Hook):
    """Fail early when the head's ``num_classes`` differs from the number of
    classes of a dataset it is trained or evaluated on.

    Benchmark configs choose both from one ``task`` key (``--task``), so
    with vpt_mm's tools a mismatch cannot happen; this hook makes it an
    error for any other launcher or hand-edited config too. Models without
    a ``head.num_classes`` and datasets without class names are skipped.
    """

    priority = 'VERY_HIGH'

    @staticmethod
    def _check(runner, loader, stage: str) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        num_classes: Optional[int] = getattr(
            getattr(model, 'head', None), 'num_classes', None)
        dataset = getattr(loader, 'dataset', None)
        classes = getattr(dataset, 'metainfo', {}).get('classes', None)
        if num_classes is None or classes is None:
            return
        if len(classes) != num_classes:
            raise ValueError(
                f'The head predicts {num_classes} classes but the {stage} '
                f'dataset ({type(dataset).__name__}) has {len(classes)}; '
                'select the task with --task rather than editing '
                'num_classes')

    def before_train(self, runner) -> None:
        self._check(runner, runner.train_loop.dataloader, 'train')

    def before_val(self, runner) -> None:
        self._check(runner, runner.val_loop.dataloader, 'val')

    def before_test(self, runner) -> None:
        self._check(runner, runner.test_loop.dataloader, 'test')
