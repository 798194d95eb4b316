"""A test hook: every rank saves its prompt tensor after training."""
import os

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DumpPromptsHook(Hook):

    def after_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        path = os.path.join(runner.work_dir, f'prompts_rank{runner.rank}.pt')
        torch.save(model.backbone.prompt.embeddings.detach().cpu(), path)
