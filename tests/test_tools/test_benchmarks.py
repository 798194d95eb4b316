"""The classification benchmarks end to end on tiny copies of the real
layouts: data preparation, tools/train.py, tools/test.py, tools/sweep.py."""
import glob
import json
import os
import os.path as osp
import sys

import pytest
import torch
from mmpretrain.models.backbones import VisionTransformer

from tests.test_tools.test_train import REPO, run
from tests.test_tools.test_trust import fails
from vpt_mm.datasets.synthetic import make_dogs_layout, make_vtab_task
from vpt_mm.sweep import Sweep, SweepSpec, overrides

pytestmark = pytest.mark.slow
ARCH = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)


@pytest.fixture(scope='module')
def bench(tmp_path_factory):
    """VTAB dmlab and Stanford Dogs on disk, a random 'pretrained' 2-layer
    ViT-B-shaped checkpoint, and small overrides of the real configs."""
    root = tmp_path_factory.mktemp('bench')
    make_vtab_task(str(root / 'vtab'), 'dmlab', train=2, val=1, test=1)
    dogs = make_dogs_layout(str(root / 'fgvc'), train=2, test=1)
    out = run([sys.executable, 'tools/dataset_converters/prepare_fgvc.py',
               'stanford_dogs', dogs])
    assert 'train.json: 216 images, val.json: 24 images' in out
    vit = VisionTransformer(arch=ARCH, img_size=224, patch_size=16)
    torch.save(vit.state_dict(), root / 'vit.pth')
    configs = {}
    for bench_name, base in (('vtab', 'configs/vtab/vpt_deep_vit-b.py'),
                             ('fgvc', 'configs/fgvc/vpt_shallow_vit-b.py')):
        path = root / f'{bench_name}.py'
        path.write_text(f"""
_base_ = [{osp.join(REPO, base)!r}]
model = dict(
    backbone=dict(arch=dict(_delete_=True, **{ARCH!r}),
                  prompt_cfg=dict(num_tokens=4),
                  init_cfg=dict(checkpoint={str(root / 'vit.pth')!r})),
    head=dict(in_channels=32))
prompt_lengths = []  # keep num_tokens=4 in the sweep
data_root = {str(root / bench_name)!r}
loader = dict(num_workers=0, persistent_workers=False, pin_memory=False,
              dataset=dict(data_root=data_root))
train_dataloader = dict(batch_size=16, **loader)
val_dataloader = dict(batch_size=64, **loader)
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2, val_interval=2)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=True,
                        begin=0, end=1, convert_to_iter_based=True)]
default_hooks = dict(logger=dict(interval=1))
""")
        configs[bench_name] = str(path)
    return root, configs


@pytest.mark.parametrize('bench_name,task,num_test', [('vtab', 'dmlab', 6),
                                                      ('fgvc',
                                                       'stanford_dogs', 120)])
def test_train_and_test(bench, tmp_path, bench_name, task, num_test):
    _, configs = bench
    work = str(tmp_path / 'work')
    log = run([
        sys.executable, 'tools/train.py', configs[bench_name], '--task', task,
        '--work-dir', work
    ])
    assert 'accuracy/top1' in log
    out = str(tmp_path / 'metrics.json')
    log = run([
        sys.executable, 'tools/test.py', configs[bench_name],
        osp.join(work, 'epoch_2.pth'), '--task', task, '--out', out
    ])
    assert f'Epoch(test) [{-(-num_test // 64)}/{-(-num_test // 64)}]' in log
    metrics = json.load(open(out))
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0


def test_sweep_then_restart(bench):
    root, configs = bench
    sweep_dir = str(root / 'sweep')
    args = [
        sys.executable, 'tools/sweep.py', configs['vtab'], '--tasks',
        'dmlab', '--lrs', '1', '0.5', '--wds', '0', '0.01', '--seeds', '2',
        '--work-dir', sweep_dir, '--method', 'VPT-Deep', '--backbone',
        'tiny'
    ]
    # A job killed after its training: its recorded config (written by the
    # sweep before it starts a job), checkpoints, no metrics.
    unfinished = osp.join(sweep_dir, 'dmlab', 'tune', 'lr0.5_wd0')
    spec = SweepSpec(config=osp.abspath(configs['vtab']), lrs=[1.0, 0.5],
                     weight_decays=[0.0, 0.01])
    sweep = Sweep(spec, sweep_dir, ['dmlab'], 'vtab1k')
    sweep.check_job('dmlab', unfinished, overrides(
        dict(lr=0.5, weight_decay=0.0), sweep.tune_splits, spec, seed=0))
    run([
        sys.executable, 'tools/train.py', configs['vtab'], '--task', 'dmlab',
        '--work-dir', unfinished, '--no-validate', '--cfg-options',
        'train_dataloader.dataset.split=train800',
        'test_dataloader.dataset.split=val200',
        'optim_wrapper.optimizer.lr=0.5',
        'optim_wrapper.optimizer.weight_decay=0', 'randomness.seed=0'
    ])
    log = run(args)
    assert log.count('[sweep] run ') == 6 and '[sweep] done' not in log
    resumed_log = sorted(glob.glob(osp.join(unfinished, '*', '*.log')))[-1]
    resumed = open(resumed_log).read()
    assert 'resumed epoch: 2' in resumed and 'Epoch(train)' not in resumed
    assert not glob.glob(osp.join(sweep_dir, '**', '*.pth'), recursive=True)

    best = json.load(open(osp.join(sweep_dir, 'dmlab', 'best.json')))
    assert len(best['scores']) == 4 and best['splits'] == ['train800',
                                                           'val200']
    top = max(s['top1'] for s in best['scores'])
    assert best['chosen']['top1'] == top
    assert best['chosen']['lr'] == min(
        s['lr'] for s in best['scores'] if s['top1'] == top)
    records = json.load(open(osp.join(sweep_dir, 'records.json')))
    assert [(r['task'], r['seed']) for r in records] == [('dmlab', 0),
                                                        ('dmlab', 1)]
    table = open(osp.join(sweep_dir, 'results.md')).read().splitlines()
    assert table[2].startswith('| VPT-Deep | tiny |') and ' ± ' in table[2]
    assert 'DMLab' in open(osp.join(sweep_dir, 'hparams.md')).read()
    assert osp.isfile(osp.join(sweep_dir, 'results.csv'))

    metrics = glob.glob(
        osp.join(sweep_dir, '**', 'test_metrics.json'), recursive=True)
    assert len(metrics) == 6
    mtimes = {m: os.stat(m).st_mtime_ns for m in metrics}
    log = run(args)  # a second invocation does no work
    assert '[sweep] run' not in log and log.count('[sweep] done') == 6
    assert {m: os.stat(m).st_mtime_ns for m in metrics} == mtimes
    assert json.load(open(osp.join(sweep_dir, 'records.json'))) == records


def sweep_cmd(config, sweep_dir, *args):
    return [sys.executable, 'tools/sweep.py', config, '--tasks', 'dmlab',
            '--wds', '0', '--seeds', '1', '--work-dir', sweep_dir, *args]


def test_sweep_refuses_an_edited_config(bench, tmp_path):
    """Seeds trained with p=4 and p=2 never end up in one row: a restarted
    sweep whose config file changed names the change; --restart reruns."""
    _, configs = bench
    config = tmp_path / 'edited.py'
    config.write_text(open(configs['vtab']).read())
    sweep_dir = str(tmp_path / 'sweep')
    run(sweep_cmd(str(config), sweep_dir, '--lrs', '1'))
    config.write_text(open(configs['vtab']).read().replace(
        'prompt_cfg=dict(num_tokens=4)', 'prompt_cfg=dict(num_tokens=2)'))
    out = fails(sweep_cmd(str(config), sweep_dir, '--lrs', '1'))
    assert 'cannot be reused: its config changed' in out
    assert "'model.backbone.prompt_cfg.num_tokens': (4, 2)" in out
    log = run(sweep_cmd(str(config), sweep_dir, '--lrs', '1', '--restart'))
    assert log.count('[sweep] restart ') == 2
    assert log.count('[sweep] run ') == 2
    for job in glob.glob(osp.join(sweep_dir, 'dmlab', '*', '*', 'job.json')):
        recorded = json.load(open(job))['config']
        assert recorded['model.backbone.prompt_cfg.num_tokens'] == 2


def test_sweep_never_scores_a_diverged_run(bench, tmp_path):
    _, configs = bench
    sweep_dir = str(tmp_path / 'sweep')
    small_batch = ['--cfg-options', 'train_dataloader.batch_size=2']
    log = run(sweep_cmd(configs['vtab'], sweep_dir, '--lrs', '1e30', '0.5',
                        *small_batch))
    assert 'lr1e+30_wd0 diverged at iteration' in log
    best = json.load(open(osp.join(sweep_dir, 'dmlab', 'best.json')))
    assert best['diverged'] == ['lr1e+30_wd0']
    assert best['chosen']['lr'] == 0.5
    hparams = json.load(open(osp.join(sweep_dir, 'hparams.json')))
    assert hparams['dmlab']['diverged'] == ['lr1e+30_wd0']

    # Every grid point diverges: the task failed, no final run, no 0.00.
    failed_dir = str(tmp_path / 'failed')
    out = fails(sweep_cmd(configs['vtab'], failed_dir, '--lrs', '1e30',
                          *small_batch))
    assert 'gave no number' in out and 'every grid point diverged' in out
    assert not osp.exists(osp.join(failed_dir, 'dmlab', 'final'))
    table = open(osp.join(failed_dir, 'results.md')).read()
    assert '| failed |' in table and '0.00' not in table
    assert '| DMLab | failed |' in open(
        osp.join(failed_dir, 'hparams.md')).read()


def test_mmpretrain_own_train_tool_selects_task_and_data(bench, tmp_path):
    """mmpretrain's tools/train.py (what ``mim train mmpretrain`` runs)
    honours ``task=`` and ``data_root=`` as tools/train.py does: the
    datasets and the head follow them (VPTRunner.from_cfg)."""
    import mmpretrain
    from mmengine.config import Config
    root, configs = bench
    moved = tmp_path / 'moved'
    os.symlink(root / 'vtab', moved)
    tool = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools',
                    'train.py')
    work = str(tmp_path / 'work')
    log = run([sys.executable, tool, configs['vtab'], '--work-dir', work,
               '--cfg-options', 'task=dmlab', f'data_root={moved}',
               'train_cfg.max_epochs=1', 'train_cfg.val_interval=1'])
    assert 'accuracy/top1' in log
    dumped = Config.fromfile(osp.join(work, 'vtab.py'))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = dumped[key].dataset
        assert (dataset.task, dataset.data_root) == ('dmlab', str(moved))
    assert dumped.model.head.num_classes == 6


def test_tools_take_the_task_and_files_know_theirs(bench, tmp_path):
    """extract_tuned.py and class_prototypes.py take the task as
    tools/test.py does (--task, --cfg-options task=); a tuned file trained
    on dmlab is refused on clevr_dist (also 6 classes), naming both."""
    root, configs = bench
    cfg = configs['vtab']
    work = str(tmp_path / 'work')
    run([sys.executable, 'tools/train.py', cfg, '--task', 'dmlab',
         '--work-dir', work, '--cfg-options', 'train_cfg.max_epochs=1',
         'train_cfg.val_interval=1'])
    tuned = str(tmp_path / 'dmlab.safetensors')
    for how in (['--task', 'dmlab'], ['--cfg-options', 'task=dmlab']):
        run([sys.executable, 'tools/model_converters/extract_tuned.py', cfg,
             osp.join(work, 'epoch_1.pth'), tuned, *how])
    from safetensors import safe_open
    with safe_open(tuned, framework='pt') as f:
        assert f.metadata()['task'] == 'dmlab'
    # The default task (cifar100) is not the checkpoint's.
    out = fails([sys.executable, 'tools/model_converters/extract_tuned.py',
                 cfg, osp.join(work, 'epoch_1.pth'), tuned])
    assert "trained on task 'dmlab', but this run selects task " \
        "'cifar100'" in out
    run([sys.executable, 'tools/test.py', cfg, tuned, '--task', 'dmlab'])
    other = tmp_path / 'other'
    make_vtab_task(str(other), 'clevr_dist', train=2, val=1, test=1)
    test_other = [sys.executable, 'tools/test.py', cfg, tuned, '--task',
                  'clevr_dist', '--cfg-options', f'data_root={other}']
    out = fails(test_other)
    assert "trained on task 'dmlab', but this run selects task " \
        "'clevr_dist'" in out
    assert 'accuracy/top1' in run(test_other + ['--allow-other-task'])
    protos = str(tmp_path / 'protos.pt')
    for how in (['--task', 'dmlab'], ['--cfg-options', 'task=dmlab']):
        run([sys.executable, 'tools/analysis_tools/class_prototypes.py', cfg,
             protos, *how])
        assert tuple(torch.load(protos).shape) == (6, 32)
