"""Config resolution of the benchmark configs (vpt_mm/config.py)."""
import argparse
import glob
import os
import os.path as osp

import pytest
import torch

from vpt_mm.config import apply_task, config_from_file, load_config
from vpt_mm.datasets import TASKS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
VTAB = [osp.join(REPO, 'configs/vtab', n)
        for n in ('vpt_deep_vit-b.py', 'vpt_shallow_vit-b.py')]
FGVC = [osp.join(REPO, 'configs/fgvc', n)
        for n in ('vpt_deep_vit-b.py', 'vpt_shallow_vit-b.py')]


def _datasets(cfg):
    return [cfg[k].dataset for k in ('train_dataloader', 'val_dataloader',
                                     'test_dataloader')]


@pytest.mark.parametrize('path', VTAB + FGVC)
def test_configs_default_task_is_consistent(path):
    cfg = config_from_file(path)
    info = TASKS[cfg.task]
    assert cfg.model.head.num_classes == info.num_classes
    assert all(d.task == cfg.task for d in _datasets(cfg))
    assert cfg.train_dataloader.batch_size == 128
    assert cfg.auto_scale_lr == dict(base_batch_size=256, enable=True)
    deep = 'deep' in osp.basename(path)
    assert cfg.model.backbone.prompt_cfg.deep is deep
    splits = [d.split for d in _datasets(cfg)]
    assert splits == (['train800val200', 'test', 'test'] if path in VTAB
                      else ['train', 'test', 'test'])


@pytest.mark.parametrize(
    'path', sorted(glob.glob(osp.join(REPO, 'configs/vtab/*.py')) +
                   glob.glob(osp.join(REPO, 'configs/fgvc/*.py'))))
def test_every_benchmark_config(path):
    """Every VTAB/FGVC config: its default task, the paper's batch, a
    protocol that fits its backbone."""
    from vpt_mm.tuning import Protocol
    cfg = config_from_file(path)
    assert cfg.task == ('cifar100' if '/vtab/' in path else 'cub')
    assert cfg.model.head.num_classes == TASKS[cfg.task].num_classes
    assert all(d.task == cfg.task for d in _datasets(cfg))
    protocol_batch = dict(Full=384, Linear=1024, Mlp=1024)
    assert cfg.train_dataloader.batch_size == protocol_batch.get(
        cfg.model.tuning.type, 128)
    assert cfg.model.type == 'TunedClassifier'
    protocol = Protocol.from_dict(cfg.model.tuning)
    prompted = cfg.model.backbone.type.startswith('Prompted')
    assert prompted == protocol.type.startswith('VPT')


def test_vtab_pipeline_has_no_augmentation():
    cfg = config_from_file(VTAB[0])
    types = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert types == ['LoadImageFromFile', 'Resize', 'PackInputs']
    assert cfg.train_dataloader.dataset.pipeline[1].scale == (224, 224)
    assert cfg.model.data_preprocessor.mean == [123.675, 116.28, 103.53]


def test_fgvc_pipelines():
    cfg = config_from_file(FGVC[0])
    train = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    test = [t.type for t in cfg.test_dataloader.dataset.pipeline]
    assert train == ['LoadImageFromFile', 'ResizeEdge', 'RandomCrop',
                     'RandomFlip', 'PackInputs']
    assert test == ['LoadImageFromFile', 'ResizeEdge', 'CenterCrop',
                    'PackInputs']


@pytest.mark.parametrize('path,task', [(VTAB[0], 'dmlab'),
                                       (FGVC[1], 'stanford_dogs')])
def test_task_sets_datasets_and_head(path, task):
    cfg = config_from_file(path)
    apply_task(cfg, task)
    assert cfg.task == task
    assert cfg.model.head.num_classes == TASKS[task].num_classes
    assert all(d.task == task for d in _datasets(cfg))


def test_task_of_other_benchmark_is_an_error():
    cfg = config_from_file(VTAB[0])
    with pytest.raises(ValueError, match="'cub' is a fgvc task.*configs/"
                       'fgvc/'):
        apply_task(cfg, 'cub')
    with pytest.raises(ValueError, match='Unknown task'):
        apply_task(cfg, 'imagenet')


def test_task_on_a_config_without_benchmark_data():
    cfg = config_from_file(
        osp.join(REPO, 'configs/demo/vpt-deep_vit-tiny_digits-5to9.py'))
    apply_task(cfg)  # no task key: untouched
    with pytest.raises(ValueError, match='none of its dataloaders'):
        apply_task(cfg, 'dmlab')


def _args(config, **kwargs):
    args = dict(config=config, cfg_options=None, task=None, work_dir=None,
                launcher='none', local_rank=0)
    args.update(kwargs)
    return argparse.Namespace(**args)


def test_load_config_task_and_work_dir():
    cfg = load_config(_args(VTAB[0], task='kitti_dist'))
    assert cfg.model.head.num_classes == 4
    assert cfg.work_dir == './work_dirs/vpt_deep_vit-b/kitti_dist'
    cfg = load_config(_args(VTAB[0], cfg_options={'task': 'svhn'}))
    assert cfg.model.head.num_classes == 10
    assert cfg.train_dataloader.dataset.task == 'svhn'


def test_num_classes_cannot_be_set_against_the_task():
    with pytest.raises(ValueError, match='num_classes follows from the task'):
        load_config(
            _args(VTAB[0], task='dmlab',
                  cfg_options={'model.head.num_classes': 5}))


def test_cached_features_need_a_deterministic_pipeline():
    from vpt_mm.config import check_cached_features
    vtab = config_from_file(osp.join(REPO, 'configs/vtab/linear_vit-b.py'))
    assert vtab.model.tuning.cache_features
    check_cached_features(vtab)
    fgvc = config_from_file(osp.join(REPO, 'configs/fgvc/vpt_deep_vit-b.py'))
    fgvc.model.tuning = dict(type='Linear', cache_features=True)
    with pytest.raises(ValueError, match="pipeline is random: "
                       r"\['RandomCrop', 'RandomFlip'\]"):
        check_cached_features(fgvc)


def test_data_root_moves_every_dataloader(tmp_path):
    loaders = ('train_dataloader', 'val_dataloader', 'test_dataloader')
    for config in (VTAB[0], osp.join(REPO, 'configs/fgvc/vpt_deep_vit-b.py')):
        cfg = load_config(_args(config, cfg_options={'data_root': '/d/x'}))
        assert [cfg[k].dataset.data_root for k in loaders] == ['/d/x'] * 3
    # A config inheriting a benchmark config and setting data_root.
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = [{VTAB[0]!r}]\ndata_root = '/mnt/vtab'\n")
    cfg = load_config(_args(str(child)))
    assert [cfg[k].dataset.data_root for k in loaders] == ['/mnt/vtab'] * 3
    with pytest.raises(ValueError, match='set data_root=DIR instead'):
        load_config(_args(VTAB[0], cfg_options={
            'train_dataloader.dataset.data_root': '/d/x'}))


def test_data_root_reaches_every_dataset_with_one():
    """The top-level data_root moves benchmark datasets and any other
    dataset that has a data_root (mmseg's ADE20K), through wrappers; a
    dataset without one (the digits demo) is left alone."""
    from mmengine.config import Config

    from vpt_mm.config import apply_data_root
    cfg = Config(dict(
        data_root='/new',
        train_dataloader=dict(dataset=dict(
            type='RepeatDataset', times=2,
            dataset=dict(type='ADE20KDataset', data_root='data/ade'))),
        val_dataloader=dict(dataset=dict(type='VTAB1k', task='dmlab')),
        test_dataloader=dict(dataset=dict(type='SklearnDigits'))))
    apply_data_root(cfg)
    assert cfg.train_dataloader.dataset.dataset.data_root == '/new'
    assert 'data_root' not in cfg.train_dataloader.dataset
    assert cfg.val_dataloader.dataset.data_root == '/new'
    assert 'data_root' not in cfg.test_dataloader.dataset


def test_messages_say_what_happened(tmp_path, monkeypatch):
    """Each message names the file and the real cause."""
    from mmengine.runner import Runner

    from tests.test_checkpoints import classifier
    from vpt_mm.checkpoints import (
        backbone_source,
        frozen_fingerprint,
        load_from_tuned,
        load_from_vpt_mm,
        load_model_checkpoint,
    )
    from vpt_mm.engine import VPTRunner
    # mmengine logs "Loads checkpoint by <name[10:]> backend".
    assert load_from_vpt_mm.__name__[10:] == 'vpt_mm'
    assert load_from_tuned.__name__[10:] == 'tuned'
    # Empty and truncated checkpoints name the file.
    for name, data in (('empty.pth', b''), ('cut.pth', b'PK\x03\x04abc')):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=f'{path} is not a readable '
                           r'checkpoint \(\d+ bytes'):
            load_model_checkpoint(classifier(), str(path))
    # No pretrained checkpoint: the log does not claim one.
    model = classifier()
    assert backbone_source(model, frozen_fingerprint(model)) == (
        'frozen backbone randomly initialised (no Pretrained init_cfg), the '
        'one the file was trained on (fingerprint verified)')
    assert 'NOT the one' in backbone_source(model, '0' * 64,
                                            allow_other_backbone=True)

    # Ctrl-C while mmengine formats the config is an interrupt.
    def interrupted(self, *args, **kwargs):
        try:
            raise KeyboardInterrupt
        except:  # noqa: E722  (as mmengine's pretty_text)
            raise SyntaxError('Failed to format the config file')
    monkeypatch.setattr(Runner, 'save_checkpoint', interrupted)
    with pytest.raises(KeyboardInterrupt, match='previous checkpoint is '
                       'intact'):
        VPTRunner.save_checkpoint(VPTRunner.__new__(VPTRunner),
                                  str(tmp_path))


@pytest.mark.parametrize('lr, advice', [(0.0, 'The learning rate is 0'),
                                        (0.5, 'Lower the learning rate')])
def test_divergence_advice_follows_the_lr(tmp_path, lr, advice):
    from types import SimpleNamespace

    from vpt_mm.hooks import NonFiniteLossHook
    runner = SimpleNamespace(
        optim_wrapper=SimpleNamespace(get_lr=lambda: dict(lr=[lr])),
        iter=0, epoch=0, work_dir=str(tmp_path))
    with pytest.raises(FloatingPointError, match=advice):
        NonFiniteLossHook().after_train_iter(
            runner, 0, outputs=dict(loss=torch.tensor(float('nan'))))


def test_tools_read_splits_with_at_most_one_worker_per_core(monkeypatch):
    from vpt_mm.config import local_loader
    monkeypatch.setattr('os.cpu_count', lambda: 2)
    cfg = local_loader(dict(batch_size=4, num_workers=8,
                            persistent_workers=True))
    assert (cfg['num_workers'], cfg['persistent_workers']) == (2, False)
    assert local_loader(dict(num_workers=0))['num_workers'] == 0


def test_infer_help_documents_its_arguments():
    import subprocess
    import sys

    from tests.test_tools.test_train import REPO
    out = subprocess.run([sys.executable, 'tools/infer.py', '--help'],
                         cwd=REPO, capture_output=True, text=True,
                         timeout=120).stdout
    assert 'config file path' in out
    assert 'tuned-only file' in out and 'NAME=FILE' in out
    assert 'task=dmlab' in out  # the config's task via --cfg-options


def test_runner_expects_the_task_and_classes_of_its_built_loop():
    from types import SimpleNamespace

    from mmengine.config import Config
    from torch.utils.data import DataLoader

    from vpt_mm.engine import VPTRunner

    class Data(list):
        metainfo = dict(classes=('cat', 'dog'))
    runner = VPTRunner.__new__(VPTRunner)
    runner.cfg = Config(dict(task='dmlab'))
    runner._test_loop = dict(type='TestLoop')  # not built: no classes
    assert runner.expected_task() == dict(task='dmlab')
    runner._test_loop = SimpleNamespace(dataloader=DataLoader(Data([1])))
    assert runner.expected_task() == dict(task='dmlab',
                                          classes=['cat', 'dog'])


@pytest.mark.parametrize('save_frozen', [False, True])
def test_checkpoints_copy_only_what_they_keep(tmp_path, monkeypatch,
                                              save_frozen):
    """mmengine copies ``model.state_dict()`` to the CPU before any hook
    sees it; with a frozen backbone only the kept tensors are copied (on a
    GPU, the rest would be a device-to-host copy per save, then dropped)."""
    import mmengine.runner.runner as mm_runner
    from torch.utils.data import DataLoader

    from tests.test_checkpoints import classifier
    from vpt_mm.checkpoints import frozen_keys
    from vpt_mm.engine import VPTRunner
    copied, original = [], mm_runner.weights_to_cpu

    def recording(state):
        copied.append(set(state))
        return original(state)

    monkeypatch.setattr(mm_runner, 'weights_to_cpu', recording)
    model = classifier()
    data = DataLoader([torch.zeros(3, 32, 32)], batch_size=1)
    runner = VPTRunner(
        model=model, work_dir=str(tmp_path), train_dataloader=data,
        train_cfg=dict(by_epoch=True, max_epochs=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(checkpoint=dict(type='VPTCheckpointHook',
                                           save_frozen=save_frozen)))
    runner.save_checkpoint(str(tmp_path), 'epoch_1.pth',
                           save_optimizer=False, save_param_scheduler=False)
    frozen = frozen_keys(model)
    assert frozen and len(copied) == 1
    assert bool(copied[0] & frozen) == save_frozen
    assert copied[0] - frozen == set(model.state_dict()) - frozen
    saved = torch.load(tmp_path / 'epoch_1.pth', weights_only=False)
    assert set(saved['state_dict']) == (set(model.state_dict()) if save_frozen
                                        else set(model.state_dict()) - frozen)
    assert set(model.state_dict()) >= frozen  # the model itself is whole


def test_deterministic_runs_set_the_cublas_workspace(monkeypatch):
    """randomness.deterministic=True (tools/train.py --deterministic) needs
    CUBLAS_WORKSPACE_CONFIG on CUDA, or torch refuses every cuBLAS product;
    a value the user set is kept."""
    from mmengine.config import Config

    from vpt_mm.devices import deterministic_cuda_env
    monkeypatch.delenv('CUBLAS_WORKSPACE_CONFIG', raising=False)
    deterministic_cuda_env(Config(dict(randomness=dict(seed=0))))
    assert 'CUBLAS_WORKSPACE_CONFIG' not in os.environ
    deterministic_cuda_env(
        Config(dict(randomness=dict(seed=0, deterministic=True))))
    assert os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':4096:8'
    monkeypatch.setenv('CUBLAS_WORKSPACE_CONFIG', ':16:8')
    deterministic_cuda_env(Config(dict(randomness=dict(deterministic=True))))
    assert os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':16:8'


def test_resolving_twice_is_resolving_once():
    """The runner resolves the config it is given again (mmpretrain's and
    mmseg's own tools do not resolve it): on a resolved config that
    changes nothing."""
    import copy

    from vpt_mm.config import resolve_config
    cfg = resolve_config(osp.join(REPO, 'configs/vtab/vpt_deep_vit-b.py'),
                         dict(data_root='elsewhere'), task='dmlab')
    again = copy.deepcopy(cfg)
    apply_task(again)
    assert again.to_dict() == cfg.to_dict()
    assert cfg.model.head.num_classes == 6


def test_print_config_prints_the_resolved_config(capsys, monkeypatch):
    from tests.test_tools.test_train import load_tool
    tool = load_tool('tools/print_config.py')
    monkeypatch.setattr('sys.argv', [
        'print_config.py', osp.join(REPO, 'configs/vtab/vpt_deep_vit-b.py'),
        '--task',
        'dmlab', '--cfg-options', 'data_root=elsewhere'])
    tool.main()
    out = capsys.readouterr().out
    assert 'num_classes=6' in out
    assert "task='dmlab'" in out and "data_root='elsewhere'" in out
