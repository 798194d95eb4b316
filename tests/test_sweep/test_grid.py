"""The sweep's pure parts; the real sweep runs in tests/test_tools."""
import os

import pytest

from vpt_mm.sweep import (
    FULL_LRS,
    VPT_LRS,
    WEIGHT_DECAYS,
    Sweep,
    SweepSpec,
    grid,
    overrides,
    point_name,
    select_best,
)


def test_paper_grids():
    assert VPT_LRS == (50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05)
    assert FULL_LRS == (0.001, 0.0005, 0.0001, 0.005)
    assert WEIGHT_DECAYS == (0.01, 0.001, 0.0001, 0)


def test_grid_and_names():
    spec = SweepSpec('c.py', lrs=[1, 0.5], weight_decays=[0, 1e-4])
    points = grid(spec)
    assert len(points) == 4
    assert [point_name(p) for p in points] == [
        'lr1_wd0', 'lr1_wd0.0001', 'lr0.5_wd0', 'lr0.5_wd0.0001'
    ]
    spec.num_tokens = [1, 50]
    assert len(grid(spec)) == 8
    assert point_name(grid(spec)[1]) == 'lr1_wd0_p50'


def test_select_best_ties_to_smaller_lr():
    scores = [
        dict(lr=5.0, weight_decay=0.0, top1=80.0),
        dict(lr=1.0, weight_decay=0.01, top1=80.0),
        dict(lr=1.0, weight_decay=0.001, top1=80.0),
        dict(lr=0.5, weight_decay=0.0, top1=79.0),
    ]
    assert select_best(scores) == scores[1]  # smaller lr, then larger wd
    with pytest.raises(ValueError, match='No scored'):
        select_best([])


def test_overrides():
    spec = SweepSpec('c.py', lrs=[1], weight_decays=[0], train_fraction=0.2,
                     fraction_seed=3, cfg_options=['a=1'])
    opts = overrides(dict(lr=2.5, weight_decay=1e-4, num_tokens=10),
                     ('train800', 'val200'), spec, seed=2)
    assert opts == [
        'train_dataloader.dataset.split=train800',
        'test_dataloader.dataset.split=val200',
        'optim_wrapper.optimizer.lr=2.5',
        'optim_wrapper.optimizer.weight_decay=0.0001',
        'randomness.seed=2',
        'model.backbone.prompt_cfg.num_tokens=10',
        'train_dataloader.dataset.train_fraction=0.2',
        'train_dataloader.dataset.fraction_seed=3',
        'a=1',
    ]


def test_bad_sweeps(tmp_path):
    spec = SweepSpec('c.py', lrs=[1], weight_decays=[0])
    with pytest.raises(ValueError, match="'cub' is not a vtab1k task"):
        Sweep(spec, str(tmp_path), ['dmlab', 'cub'], 'vtab1k')
    with pytest.raises(ValueError, match='seeds must be >= 1'):
        Sweep(spec, str(tmp_path), ['dmlab'], 'vtab1k', seeds=0)
    with pytest.raises(ValueError, match='Prompt lengths must be >= 1'):
        Sweep(SweepSpec('c.py', [1], [0], num_tokens=[0]), str(tmp_path),
              ['dmlab'], 'vtab1k')
    with pytest.raises(ValueError, match='train_fraction'):
        Sweep(SweepSpec('c.py', [1], [0], train_fraction=0.0),
              str(tmp_path), ['dmlab'], 'vtab1k')


def test_restart_with_other_arguments_is_an_error(tmp_path):
    Sweep(SweepSpec('c.py', [1], [0]), str(tmp_path), ['dmlab'],
          'vtab1k').check_spec()
    Sweep(SweepSpec('c.py', [1], [0]), str(tmp_path), ['dmlab'],
          'vtab1k').check_spec()
    with pytest.raises(ValueError, match='records a different sweep'):
        Sweep(SweepSpec('c.py', [1, 2], [0]), str(tmp_path), ['dmlab'],
              'vtab1k').check_spec()


def _config_with_checkpoint(tmp_path):
    ckpt = tmp_path / 'backbone.pth'
    ckpt.write_bytes(b'first backbone')
    cfg = tmp_path / 'c.py'
    cfg.write_text(
        'model = dict(backbone=dict(init_cfg=dict(type="Pretrained", '
        f'checkpoint="{ckpt}")), head=dict(num_classes=1))\n'
        'train_dataloader = dict(dataset=dict(type="VTAB1k", task="dmlab"))\n')
    return str(cfg), ckpt


def test_jobs_record_the_bytes_of_their_checkpoint(tmp_path):
    """A pretrained checkpoint replaced between a kill and a restart (same
    path, other backbone) is found: the job's record no longer matches."""
    from vpt_mm.sweep.jobs import record_config
    cfg, ckpt = _config_with_checkpoint(tmp_path)
    sweep = Sweep(SweepSpec(cfg, [1], [0]), str(tmp_path / 's'), ['dmlab'],
                  'vtab1k')
    job = str(tmp_path / 's' / 'job')
    config = sweep.job_config('dmlab', [])
    assert 'model.backbone.init_cfg.checkpoint.sha256' in config
    record_config(job, config)
    (tmp_path / 's' / 'job' / 'epoch_1.pth').write_bytes(b'half done')
    record_config(job, sweep.job_config('dmlab', []))  # unchanged: reused
    ckpt.write_bytes(b'another backbone')
    restarted = Sweep(SweepSpec(cfg, [1], [0]), str(tmp_path / 's'),
                      ['dmlab'], 'vtab1k')
    with pytest.raises(ValueError, match='init_cfg.checkpoint.sha256'):
        record_config(job, restarted.job_config('dmlab', []))


def test_two_sweeps_on_one_folder_are_refused(tmp_path):
    first = Sweep(SweepSpec('c.py', [1], [0]), str(tmp_path), ['dmlab'],
                  'vtab1k')
    first.lock()
    second = Sweep(SweepSpec('c.py', [1], [0]), str(tmp_path), ['dmlab'],
                   'vtab1k')
    with pytest.raises(RuntimeError, match=r'in use by another sweep \(pid '
                       rf'{os.getpid()} on'):
        second.lock()
    first.unlock()
    second.lock()  # free again
    second.unlock()
