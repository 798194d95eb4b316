import math
from types import SimpleNamespace

import pytest
import torch.nn as nn

from vpt_mm.hooks import NumClassesCheckHook


def _runner(num_classes, num_dataset_classes):
    model = nn.Module()
    model.head = SimpleNamespace(num_classes=num_classes)
    dataset = SimpleNamespace(
        metainfo=dict(classes=[str(i) for i in range(num_dataset_classes)]))
    loop = SimpleNamespace(dataloader=SimpleNamespace(dataset=dataset))
    return SimpleNamespace(model=model, train_loop=loop, val_loop=loop,
                           test_loop=loop)


def test_matching_classes_pass():
    hook = NumClassesCheckHook()
    runner = _runner(6, 6)
    hook.before_train(runner)
    hook.before_val(runner)
    hook.before_test(runner)


@pytest.mark.parametrize('stage', ['train', 'val', 'test'])
def test_mismatch_is_an_error(stage):
    hook = NumClassesCheckHook()
    with pytest.raises(ValueError, match=f'predicts 100 classes but the '
                       f'{stage} dataset .* has 6'):
        getattr(hook, f'before_{stage}')(_runner(100, 6))


def test_the_fix_named_fits_the_dataset():
    """A benchmark dataset (it has a task) points at --task; any other
    dataset (an ImageFolder of the user's) at the head's num_classes."""
    runner = _runner(5, 3)
    with pytest.raises(ValueError, match=r'set model\.head\.num_classes=3$'):
        NumClassesCheckHook().before_train(runner)
    runner.train_loop.dataloader.dataset.task = 'dmlab'
    with pytest.raises(ValueError, match='select the task with --task'):
        NumClassesCheckHook().before_train(runner)


def test_models_without_head_are_skipped():
    runner = _runner(6, 5)
    del runner.model.head
    NumClassesCheckHook().before_train(runner)


def _diverge_on_rank_1(rank: int, world_size: int, port: int,
                       work_dir: str) -> None:
    """One rank of a 2-process gloo group: rank 1's loss turns NaN at the
    third iteration, rank 0's stays finite."""
    import json
    import os.path as osp

    import torch
    import torch.distributed as dist

    from vpt_mm.hooks import NonFiniteLossHook
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=world_size)
    runner = SimpleNamespace(
        optim_wrapper=SimpleNamespace(get_lr=lambda: dict(lr=[0.1])),
        iter=0, epoch=0, work_dir=work_dir)
    stopped = None
    try:
        for it in range(5):
            runner.iter = it
            loss = float('nan') if rank == 1 and it == 2 else 1.0
            NonFiniteLossHook().after_train_iter(
                runner, it, outputs=dict(loss=torch.tensor(loss)))
    except FloatingPointError as e:
        stopped = dict(iter=it, message=str(e))
    finally:
        dist.destroy_process_group()
    with open(osp.join(work_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(stopped, f)


@pytest.mark.slow
def test_divergence_on_one_rank_stops_every_rank(tmp_path):
    """All ranks stop at the iteration where any rank's loss is not finite,
    and only rank 0 writes diverged.json (naming rank 1)."""
    import json

    import torch.multiprocessing as mp

    from tests.slurm_cluster import _free_port
    mp.start_processes(_diverge_on_rank_1,
                       args=(2, _free_port(), str(tmp_path)), nprocs=2,
                       start_method='spawn', join=True)
    stops = [json.loads((tmp_path / f'rank{r}.json').read_text())
             for r in (0, 1)]
    assert [s['iter'] for s in stops] == [2, 2]
    assert all("on rank(s) [1] at iteration 3" in s['message']
               for s in stops)
    info = json.loads((tmp_path / 'diverged.json').read_text())
    assert info['ranks'] == [1] and info['iter'] == 3
    assert not math.isfinite(info['loss']['loss'])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'diverged.json', 'rank0.json', 'rank1.json']
