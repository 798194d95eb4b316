"""A test hook that kills its own training process with SIGKILL at a chosen
moment: after a given iteration, or half-way through writing a checkpoint."""
import os
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module()
class KillHook(Hook):
    """Args:
        at_iter (int, optional): SIGKILL after this (1-based) iteration.
        in_save_of_epoch (int, optional): SIGKILL while the checkpoint of
            this epoch is being written: half of its bytes are on disk.
    """

    def __init__(self, at_iter=None, in_save_of_epoch=None) -> None:
        self.at_iter = at_iter
        self.in_save_of_epoch = in_save_of_epoch

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if self.at_iter is not None and runner.iter + 1 == self.at_iter:
            _die()

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        if checkpoint['meta'].get('epoch') != self.in_save_of_epoch:
            return
        import io

        import mmengine.runner.runner as runner_module
        import torch

        def half_written(ckpt, filepath, **kwargs):
            buffer = io.BytesIO()
            torch.save(ckpt, buffer)
            data = buffer.getvalue()
            with open(filepath, 'wb') as f:
                f.write(data[:len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
            _die()

        runner_module.save_checkpoint = half_written
