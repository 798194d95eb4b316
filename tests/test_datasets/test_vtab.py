import os.path as osp

import numpy as np
import pytest

from vpt_mm.datasets import VTAB1k
from vpt_mm.datasets.synthetic import make_vtab_task


@pytest.fixture(scope='module')
def vtab_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('vtab'))
    make_vtab_task(root, 'dmlab', train=3, val=1, test=2)
    return root


def test_splits(vtab_root):
    sizes = {
        split: len(VTAB1k(task='dmlab', data_root=vtab_root, split=split))
        for split in VTAB1k.SPLITS
    }
    assert sizes == dict(train800=18, val200=6, train800val200=24, test=12)
    ds = VTAB1k(task='dmlab', data_root=vtab_root, split='test')
    assert ds.CLASSES == [str(i) for i in range(6)]
    assert ds.test_mode
    info = ds.get_data_info(0)
    assert info['img_path'] == osp.join(vtab_root, 'dmlab',
                                        'images/test/0_0.jpg')
    assert info['gt_label'] == 0


def test_pipeline_resizes_to_224(vtab_root):
    ds = VTAB1k(
        task='dmlab',
        data_root=vtab_root,
        split='train800',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(224, 224), interpolation='bilinear'),
            dict(type='PackInputs')
        ])
    sample = ds[0]
    assert tuple(sample['inputs'].shape) == (3, 224, 224)
    assert sample['data_samples'].gt_label.item() == 0


def test_train_fraction(vtab_root):
    ds = VTAB1k(task='dmlab', data_root=vtab_root, split='train800',
                train_fraction=0.34, fraction_seed=1)
    labels = [ds.get_data_info(i)['gt_label'] for i in range(len(ds))]
    assert sorted(set(labels)) == list(range(6))
    assert len(ds) == 6
    again = VTAB1k(task='dmlab', data_root=vtab_root, split='train800',
                   train_fraction=0.34, fraction_seed=1)
    assert [again.get_data_info(i)['img_path'] for i in range(6)] == [
        ds.get_data_info(i)['img_path'] for i in range(6)
    ]
    with pytest.raises(ValueError, match='train_fraction'):
        VTAB1k(task='dmlab', data_root=vtab_root, split='train800',
               train_fraction=1.5)


def test_bad_arguments(vtab_root):
    with pytest.raises(ValueError, match='Unknown task'):
        VTAB1k(task='dm_lab', data_root=vtab_root, split='test')
    with pytest.raises(ValueError, match="'cub' belongs to fgvc"):
        VTAB1k(task='cub', data_root=vtab_root, split='test')
    with pytest.raises(ValueError, match="Unknown split 'train'"):
        VTAB1k(task='dmlab', data_root=vtab_root, split='train')
    with pytest.raises(FileNotFoundError, match="task folder .*'cifar'"):
        VTAB1k(task='cifar100', data_root=vtab_root, split='test')


def _broken_copy(tmp_path, vtab_root, edit):
    import shutil
    root = tmp_path / 'vtab'
    shutil.copytree(vtab_root, root)
    edit(root / 'dmlab')
    return str(root)


def test_missing_split_file(tmp_path, vtab_root):
    root = _broken_copy(tmp_path, vtab_root,
                        lambda d: (d / 'val200.txt').unlink())
    with pytest.raises(FileNotFoundError, match='val200.txt'):
        VTAB1k(task='dmlab', data_root=root, split='val200')


def test_missing_image_names_file_and_line(tmp_path, vtab_root):
    root = _broken_copy(
        tmp_path, vtab_root,
        lambda d: (d / 'images' / 'test' / '1_0.jpg').unlink())
    with pytest.raises(FileNotFoundError,
                       match=r'test.txt, line 3: image .*1_0.jpg'):
        VTAB1k(task='dmlab', data_root=root, split='test')


def test_label_outside_classes(tmp_path, vtab_root):

    def edit(d):
        with open(d / 'test.txt', 'a') as f:
            f.write('images/test/0_0.jpg 6\n')

    root = _broken_copy(tmp_path, vtab_root, edit)
    with pytest.raises(ValueError,
                       match=r'test.txt, line 13: label 6 is outside'):
        VTAB1k(task='dmlab', data_root=root, split='test')


def test_malformed_line(tmp_path, vtab_root):

    def edit(d):
        with open(d / 'test.txt', 'a') as f:
            f.write('images/test/0_0.jpg\nimages/test/0_0.jpg two\n')

    root = _broken_copy(tmp_path, vtab_root, edit)
    with pytest.raises(ValueError, match='line 13: expected'):
        VTAB1k(task='dmlab', data_root=root, split='test')


def test_images_are_decoded(vtab_root):
    ds = VTAB1k(task='dmlab', data_root=vtab_root, split='val200',
                pipeline=[dict(type='LoadImageFromFile')])
    assert np.asarray(ds[0]['img']).ndim == 3


def test_duplicated_line_names_both_lines(tmp_path, vtab_root):

    def edit(d):
        with open(d / 'test.txt') as f:
            first = f.readline()
        with open(d / 'test.txt', 'a') as f:
            f.write(first)

    root = _broken_copy(tmp_path, vtab_root, edit)
    with pytest.raises(ValueError, match=r'test.txt, line 13: image .* is '
                       r'listed twice \(also at .*test.txt, line 1,'):
        VTAB1k(task='dmlab', data_root=root, split='test')


def test_undecodable_image_names_its_path(tmp_path, vtab_root):
    root = _broken_copy(
        tmp_path, vtab_root,
        lambda d: open(d / 'images' / 'test' / '1_0.jpg', 'wb').close())
    ds = VTAB1k(task='dmlab', data_root=root, split='test',
                pipeline=[dict(type='LoadImageFromFile')])
    index = [i for i in range(len(ds))
             if ds.get_data_info(i)['img_path'].endswith('1_0.jpg')][0]
    with pytest.raises(RuntimeError, match=r'image .*images/test/1_0.jpg '
                       r'\(sample \d+\) could not be read'):
        ds[index]


def test_dataset_argument_types(vtab_root):
    with pytest.raises(TypeError, match="train_fraction must be a number, "
                       "got '0.5'"):
        VTAB1k(task='dmlab', data_root=vtab_root, split='test',
               train_fraction='0.5')


@pytest.mark.parametrize('spelling', ['dot', 'double_slash', 'symlink'])
def test_one_image_spelled_twice_is_a_duplicate(tmp_path, vtab_root,
                                                spelling):
    """`images/./x.jpg`, `images//x.jpg` and a link to `images/x.jpg` are the
    same image: listed twice, it would count twice."""
    import os

    def edit(d):
        with open(d / 'test.txt') as f:
            first = f.readline()
        rel, label = first.split()
        folder, name = osp.split(rel)
        if spelling == 'dot':
            again = f'{folder}/./{name}'
        elif spelling == 'double_slash':
            again = f'{folder}//{name}'
        else:
            os.symlink(osp.abspath(d / rel), d / folder / f'link_{name}')
            again = f'{folder}/link_{name}'
        with open(d / 'test.txt', 'a') as f:
            f.write(f'{again} {label}\n')

    root = _broken_copy(tmp_path, vtab_root, edit)
    with pytest.raises(ValueError, match=r'test.txt, line 13: image .* is '
                       r'listed twice \(also at .*test.txt, line 1'):
        VTAB1k(task='dmlab', data_root=root, split='test')


def test_fgvc_image_spelled_twice_is_a_duplicate(tmp_path):
    import json

    from vpt_mm.datasets import FGVC, get_task
    from vpt_mm.datasets.fgvc_splits import write_fgvc_splits
    from vpt_mm.datasets.synthetic import FGVC_MAKERS
    root = str(tmp_path)
    write_fgvc_splits('cub', FGVC_MAKERS['cub'](root), seed=0)
    split = osp.join(root, get_task('cub').folder, 'test.json')
    with open(split) as f:
        entries = json.load(f)
    path, label = next(iter(entries.items()))
    entries[path.replace('/', '/./', 1)] = label
    with open(split, 'w') as f:
        json.dump(entries, f)
    with pytest.raises(ValueError, match='listed twice'):
        FGVC(task='cub', data_root=root, split='test')
