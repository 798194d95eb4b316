"""InMemoryDataset: each sample of a deterministic pipeline loaded once."""
import pytest
import torch
from torch.utils.data import DataLoader

from vpt_mm.datasets import InMemoryDataset, VTAB1k
from vpt_mm.datasets.synthetic import make_vtab_task

PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(32, 32), interpolation='bilinear'),
    dict(type='PackInputs'),
]


@pytest.fixture(scope='module')
def vtab_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('vtab'))
    make_vtab_task(root, 'dmlab', train=3, val=1, test=2, size=(40, 48))
    return root


def _vtab(root, pipeline=PIPELINE):
    return dict(type='VTAB1k', task='dmlab', data_root=root,
                split='train800', pipeline=pipeline)


def test_serves_what_the_dataset_gives(vtab_root):
    inner = VTAB1k(**{k: v for k, v in _vtab(vtab_root).items()
                      if k != 'type'})
    cached = InMemoryDataset(_vtab(vtab_root), num_threads=3)
    assert len(cached) == len(inner) == 18
    assert cached.metainfo == inner.metainfo
    for i in range(len(inner)):
        a, b = inner[i], cached[i]
        assert torch.equal(a['inputs'], b['inputs'])
        assert a['inputs'].shape == (3, 32, 32)
        assert a['data_samples'].gt_label == b['data_samples'].gt_label


def test_loaded_once_and_never_written_back(vtab_root, monkeypatch):
    cached = InMemoryDataset(_vtab(vtab_root))
    loads = []
    monkeypatch.setattr(type(cached.dataset), '__getitem__',
                        lambda self, i: loads.append(i))
    sample = cached[0]
    sample['data_samples'].set_pred_label(5)  # what a model's predict does
    assert not loads  # served from memory
    assert 'pred_label' not in cached[0]['data_samples']


def test_workers_share_the_samples(vtab_root):
    from mmengine.dataset import pseudo_collate
    cached = InMemoryDataset(_vtab(vtab_root))
    loader = DataLoader(cached, batch_size=6, num_workers=2,
                        collate_fn=pseudo_collate)
    labels = [int(s.gt_label) for batch in loader
              for s in batch['data_samples']]
    assert labels == [int(cached[i]['data_samples'].gt_label)
                      for i in range(18)]


def test_random_pipelines_are_refused(vtab_root):
    random = PIPELINE[:2] + [dict(type='RandomFlip', prob=0.5),
                             dict(type='PackInputs')]
    with pytest.raises(ValueError, match=r"must not be random; this one has "
                       r"\['RandomFlip'\]"):
        InMemoryDataset(_vtab(vtab_root, random))


def test_config_with_the_wrapper_selects_the_task(vtab_root, tmp_path):
    """--task and data_root reach the wrapped dataset."""
    from tests.test_tools.test_train import REPO
    from vpt_mm.config import resolve_config
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f"""
_base_ = ['{REPO}/configs/vtab/vpt_deep_vit-b.py']
train_dataloader = dict(dataset=dict(
    _delete_=True, type='InMemoryDataset',
    dataset={{{{_base_.train_dataloader.dataset}}}}))
""")
    resolved = resolve_config(str(cfg), dict(data_root=vtab_root), 'dmlab')
    inner = resolved.train_dataloader.dataset.dataset
    assert resolved.train_dataloader.dataset.type == 'InMemoryDataset'
    assert (inner.type, inner.task, inner.data_root) == (
        'VTAB1k', 'dmlab', vtab_root)
    assert resolved.model.head.num_classes == 6
