"""Config resolution: the one place a config file becomes the config a run
uses.

:func:`resolve_config` merges the file (its ``_base_``), the
``--cfg-options``, the benchmark ``task`` (datasets and the head's
``num_classes``) and the top-level ``data_root``; every tool goes through
it (:func:`config_from_args` for a tool's arguments, :func:`load_config`
for ``tools/train.py`` / ``tools/test.py``).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import Dict, Optional, Sequence

from mmengine.config import Config, DictAction

from .dist import LAUNCHERS

#: Config folder of each benchmark.
CONFIG_FOLDERS = {'vtab1k': 'vtab', 'fgvc': 'fgvc'}


def add_config_args(parser: argparse.ArgumentParser,
                    task: bool = True) -> None:
    """The config arguments every tool that takes a config shares: the
    config, ``--cfg-options`` and (unless the tool uses the name otherwise)
    ``--task``; read them with :func:`config_from_args`, so the task and
    the data root are applied the same way everywhere."""
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config keys, e.g. '
        'model.backbone.prompt_cfg.num_tokens=10, task=dmlab, '
        'data_root=DIR')
    if task:
        parser.add_argument(
            '--task',
            help='VTAB-1k task or FGVC dataset of a benchmark config (e.g. '
            'dmlab, cub); sets the datasets and the head\'s num_classes')


def config_from_args(args: argparse.Namespace,
                     task: bool = True) -> Config:
    """The resolved config of a tool's arguments (:func:`add_config_args`):
    :func:`resolve_config` of the config, ``--cfg-options`` (where
    ``task=`` and ``data_root=`` count as ``--task`` and the data root)
    and, if ``task``, ``--task``."""
    return resolve_config(args.config, args.cfg_options,
                          getattr(args, 'task', None) if task else None)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the train and test entry points."""
    add_config_args(parser)
    parser.add_argument('--work-dir', help='directory for logs and models')
    parser.add_argument(
        '--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def config_from_file(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Load a config, apply ``--cfg-options`` and set its default scope.

    A config file that writes ``num_classes`` next to a task it disagrees
    with is refused (:func:`check_num_classes_in_file`); a timm backbone's
    normalisation left at None is the model's
    (:func:`apply_model_normalisation`).

    Args:
        path (str): Config file.
        cfg_options (dict, optional): Parsed ``--cfg-options``.

    Returns:
        Config: The merged config.
    """
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(path)
    check_num_classes_in_file(path, cfg)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    apply_model_normalisation(cfg)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    return cfg


def benchmark_dataset(loader: Optional[dict]) -> Optional[dict]:
    """The VTAB1k / FGVC dataset dict of a dataloader, through wrappers."""
    from .datasets import TASKS
    types = {t.dataset_type for t in TASKS.values()}
    dataset = loader.get('dataset') if loader else None
    while dataset is not None:
        if dataset.get('type') in types:
            return dataset
        dataset = dataset.get('dataset')
    return None


def _timm_model_name(model: Optional[dict]) -> Optional[str]:
    """The ``model_name`` of a config's ``TimmViT`` / ``PromptedTimmViT``
    backbone."""
    backbone = (model or {}).get('backbone') or {}
    kind = str(backbone.get('type', '')).rsplit('.', 1)[-1]
    return (backbone.get('model_name')
            if kind in ('TimmViT', 'PromptedTimmViT') else None)


def apply_model_normalisation(cfg: Config) -> None:
    """Give the data preprocessor of a timm backbone the model's own
    normalisation where the config leaves it out.

    A ``TimmViT`` / ``PromptedTimmViT`` model's ``mean`` / ``std`` that
    are None (the
    base configs of timm models, or a preprocessor that does not set them)
    become the model's, from timm's pretrained config, in 0-255 pixels
    (CLIP and SigLIP differ from ImageNet's). Values the config sets are
    kept. Both the model's ``data_preprocessor`` and a top-level one (mmseg
    configs) are filled.

    Args:
        cfg (Config): The merged config, changed in place.

    Raises:
        ValueError: If timm has no pretrained config for the model name.
    """
    name = _timm_model_name(cfg.get('model', None))
    if name is None:
        return
    preprocessors = [p for p in (cfg.model.get('data_preprocessor'),
                                 cfg.get('data_preprocessor', None))
                     if p is not None]
    if not any(p.get(k) is None for p in preprocessors
               for k in ('mean', 'std')):
        return
    import timm.models
    pretrained = timm.models.get_pretrained_cfg(name)
    if pretrained is None or pretrained.mean is None:
        raise ValueError(
            f'timm has no pretrained config (mean/std) for {name!r}: set '
            'data_preprocessor mean and std in the config')
    for preprocessor in preprocessors:
        for key in ('mean', 'std'):
            if preprocessor.get(key) is None:
                preprocessor[key] = [
                    round(v * 255, 4) for v in getattr(pretrained, key)]


def apply_task(cfg: Config, task: Optional[str] = None) -> None:
    """Point a benchmark config at one task.

    The config's top-level ``task`` key (or ``task`` given here, e.g. from
    ``--task``) decides everything that depends on it: the ``task`` of every
    VTAB1k / FGVC dataset in the dataloaders (hence its folder under the
    data root) and the head's ``num_classes``. A task of the wrong
    benchmark for the config is an error. The top-level ``data_root``
    reaches every dataset that has one (:func:`apply_data_root`), in any
    config.

    A timm backbone's data preprocessor gets the model's own normalisation
    where the config leaves it out (:func:`apply_model_normalisation`).

    Args:
        cfg (Config): The merged config, changed in place.
        task (str, optional): Task overriding ``cfg.task``.
    """
    from .datasets import get_task
    apply_data_root(cfg)
    apply_model_normalisation(cfg)
    if task is not None:
        cfg.task = task
    task = cfg.get('task', None)
    if task is None:
        return
    info = get_task(task)
    found = False
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = benchmark_dataset(cfg.get(key, None))
        if dataset is None:
            continue
        if dataset.type != info.dataset_type:
            raise ValueError(
                f'Task {task!r} is a {info.benchmark} task, read by '
                f'{info.dataset_type}, but {key} of this config reads '
                f'{dataset.type}; use a config of configs/'
                f'{CONFIG_FOLDERS[info.benchmark]}/')
        dataset.task = task
        found = True
    if not found:
        raise ValueError(f'The config selects task={task!r}, but none of its '
                         'dataloaders reads a VTAB1k or FGVC dataset')
    head = cfg.get('model', {}).get('head', None)
    if head is None or 'num_classes' not in head:
        raise ValueError(f'The config selects task={task!r}, but its model '
                         'has no head.num_classes to set')
    head.num_classes = info.num_classes


def random_transforms(cfg: Config) -> list:
    """The random transforms of the training pipeline, by type
    (:func:`~vpt_mm.datasets.memory.random_transform_names`)."""
    from .datasets.memory import random_transform_names
    dataset = cfg.get('train_dataloader', None) or {}
    dataset = dataset.get('dataset', {})
    while 'pipeline' not in dataset and 'dataset' in dataset:
        dataset = dataset['dataset']  # dataset wrappers
    return random_transform_names(dataset.get('pipeline', []))


def check_cached_features(cfg: Config) -> None:
    """Refuse ``tuning.cache_features`` with a random training pipeline.

    Cached features are computed once per training sample, which equals
    recomputing them every epoch only if a sample always gives the same
    input.

    Raises:
        ValueError: Naming the random transforms or batch augments.
    """
    tuning = cfg.get('model', {}).get('tuning', None)
    if not tuning or not tuning.get('cache_features', False):
        return
    random = random_transforms(cfg)
    if cfg.model.get('data_preprocessor', {}).get('batch_augments'):
        random.append('data_preprocessor.batch_augments')
    if random:
        raise ValueError(
            'tuning.cache_features reuses the first epoch\'s features, but '
            f'the training pipeline is random: {random}; remove them or '
            'turn cache_features off')


def apply_data_root(cfg: Config) -> None:
    """Point the datasets of the dataloaders at the config's top-level
    ``data_root``: every VTAB1k / FGVC dataset, and any other dataset (e.g.
    mmseg's ADE20K) that has a ``data_root`` of its own.

    mmengine resolves a config's variables when the file is read, so a
    ``data_root`` set by ``--cfg-options`` or by a config inheriting a
    benchmark config would otherwise never reach the datasets. Configs
    without a top-level ``data_root`` are left alone.
    """
    from .datasets import TASKS
    root = cfg.get('data_root', None)
    if root is None:
        return
    if not isinstance(root, str):
        raise TypeError(f'data_root must be a path (str), got {root!r}')
    types = {t.dataset_type for t in TASKS.values()}
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key, None)
        dataset = loader.get('dataset') if loader else None
        while dataset is not None:  # through dataset wrappers
            if 'data_root' in dataset or dataset.get('type') in types:
                dataset.data_root = root
            dataset = dataset.get('dataset')


def local_loader(loader_cfg: dict) -> dict:
    """A dataloader config for a tool that reads a split once on this
    machine: no more workers than CPU cores (configs ask for 8, the
    cluster's), none kept alive."""
    loader_cfg = dict(loader_cfg)
    workers = min(int(loader_cfg.get('num_workers', 0) or 0),
                  os.cpu_count() or 1)
    loader_cfg.update(num_workers=workers, persistent_workers=False)
    return loader_cfg


def _num_classes_in(path: str) -> Optional[object]:
    """The ``num_classes`` the config file itself (not its bases) writes,
    if it writes one as a literal."""
    import ast
    try:
        with open(path) as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        pairs = []
        if isinstance(node, ast.Call):
            pairs = [(k.arg, k.value) for k in node.keywords]
        elif isinstance(node, ast.Dict):
            pairs = [(k.value if isinstance(k, ast.Constant) else None, v)
                     for k, v in zip(node.keys, node.values)]
        for key, value in pairs:
            if key == 'num_classes':
                try:
                    return ast.literal_eval(value)
                except ValueError:
                    return '<expression>'
    return None


def check_num_classes_in_file(path: str,
                              cfg: Optional[Config] = None) -> None:
    """Refuse a config file that sets ``num_classes`` next to a task.

    The task decides the head's class count (:func:`apply_task`), so a
    config file (not its bases) that writes another count would have it
    silently replaced.

    Args:
        path (str): The config file.
        cfg (Config, optional): The file as read, before any option;
            read here if not given.

    Raises:
        ValueError: Naming the file, its count and the task's.
    """
    from .datasets import get_task
    written = _num_classes_in(path)
    if written is None:
        return
    cfg = Config.fromfile(path) if cfg is None else cfg
    task = cfg.get('task', None)
    if task is None:
        return
    expected = get_task(task).num_classes
    if written != expected:
        raise ValueError(
            f'{path} sets num_classes={written} next to task {task!r}, which '
            f'has {expected} classes: the task decides the head\'s '
            'num_classes; remove num_classes from the config and choose the '
            'task (task=..., --task)')


def parse_cfg_options(options: Sequence[str]) -> dict:
    """``['key=value', ...]`` parsed as ``--cfg-options`` parses them."""
    namespace = argparse.Namespace()
    DictAction([], 'cfg_options')(None, namespace, list(options))
    return namespace.cfg_options or {}


def resolve_config(path: str,
                   cfg_options: Optional[dict] = None,
                   task: Optional[str] = None) -> Config:
    """The config a run trains with: the file (``_base_`` merged), the
    ``--cfg-options``, the task and the data root applied.

    Raises:
        ValueError: If ``num_classes`` or a dataset's ``data_root`` is set
            by an option of a benchmark config (the task and the top-level
            ``data_root`` decide them).
    """
    cfg = config_from_file(path, cfg_options)
    if task is not None or cfg.get('task', None) is not None:
        for key in cfg_options or {}:
            if key.endswith('num_classes'):
                raise ValueError(
                    'num_classes follows from the task of a benchmark '
                    'config; choose the task (--task) instead of setting '
                    'num_classes')
            if key.endswith('.data_root'):
                raise ValueError(
                    f'{key}: the datasets of a benchmark config all read '
                    'the top-level data_root; set data_root=DIR instead')
    apply_task(cfg, task)
    check_cached_features(cfg)
    return cfg


def flatten_config(cfg: Config) -> Dict[str, object]:
    """The resolved config as ``{dotted.key: json value}``, the form in
    which sweeps record and compare their jobs' configs."""
    import json
    flat: Dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f'{prefix}.{key}' if prefix else str(key), item)
        else:
            flat[prefix] = value

    walk('', cfg.to_dict())
    return json.loads(json.dumps(flat, default=repr, sort_keys=True))


def load_config(args: argparse.Namespace) -> Config:
    """Load the config and apply ``--cfg-options``, ``--task``,
    ``--work-dir`` and ``--launcher``.

    The default work dir is ``work_dirs/<config name>``, with
    ``/<task>`` appended for benchmark configs.
    """
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = resolve_config(args.config, args.cfg_options,
                         getattr(args, 'task', None))
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
        if cfg.get('task', None) is not None:
            cfg.work_dir = osp.join(cfg.work_dir, cfg.task)
    return cfg
