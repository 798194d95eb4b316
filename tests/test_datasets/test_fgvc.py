import json
import os
import os.path as osp

import pytest

from vpt_mm.datasets import FGVC, get_task
from vpt_mm.datasets.fgvc_splits import build_fgvc_splits, write_fgvc_splits
from vpt_mm.datasets.synthetic import FGVC_MAKERS, make_cub_layout

# Images per class in the generated layouts (vpt_mm/datasets/synthetic.py):
# (train + val, test); Flowers has 1 train, 1 val and 1 test per class.
TRAIN, TEST = 3, 1


@pytest.fixture(scope='module')
def fgvc_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('fgvc'))
    for task, make in FGVC_MAKERS.items():
        write_fgvc_splits(task, make(root), seed=0)
    return root


def _load(root, task, name):
    with open(osp.join(root, get_task(task).folder, name)) as f:
        return json.load(f)


@pytest.mark.parametrize('task', sorted(FGVC_MAKERS))
def test_writer_and_dataset(fgvc_root, task):
    info = get_task(task)
    train, val, test = (_load(fgvc_root, task, f'{s}.json')
                        for s in ('train', 'val', 'test'))
    assert not set(train) & set(val) and not set(train) & set(test)
    if task == 'oxford_flowers':  # the official val split is kept
        assert len(train) == len(val) == len(test) == info.num_classes
    else:  # 90 / 10 of the official train split
        num = TRAIN * info.num_classes
        assert len(val) == round(0.1 * num)
        assert len(train) == num - len(val)
        assert len(test) == TEST * info.num_classes
    sizes = {}
    for split in FGVC.SPLITS:
        ds = FGVC(task=task, data_root=fgvc_root, split=split)
        labels = {ds.get_data_info(i)['gt_label'] for i in range(len(ds))}
        assert labels <= set(range(info.num_classes))
        assert len(ds.CLASSES) == info.num_classes
        sizes[split] = len(ds)
        assert osp.isfile(ds.get_data_info(0)['img_path'])
    assert sizes['trainval'] == sizes['train'] + sizes['val']
    assert sizes['test'] == len(test)


def test_same_mapping_for_every_split(fgvc_root):
    # NABirds class ids are sparse: every split maps them the same way.
    ids = sorted(set(_load(fgvc_root, 'nabirds', 'test.json').values()))
    assert ids[-1] > 554
    test_json = _load(fgvc_root, 'nabirds', 'test.json')
    train_json = _load(fgvc_root, 'nabirds', 'train.json')
    mapping = {}
    for split, split_json in (('test', test_json), ('train', train_json)):
        ds = FGVC(task='nabirds', data_root=fgvc_root, split=split)
        root = osp.join(fgvc_root, 'nabirds', 'images')
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            class_id = split_json[osp.relpath(info['img_path'], root)]
            assert mapping.setdefault(class_id, info['gt_label']) == \
                info['gt_label']
    assert sorted(mapping) == ids
    assert [mapping[c] for c in ids] == list(range(555))


def test_seeded_split(tmp_path):
    folder, _ = make_cub_layout(str(tmp_path), 'cub', train=2, test=1)
    a = build_fgvc_splits('cub', folder, seed=0)
    assert build_fgvc_splits('cub', folder, seed=0) == a
    b = build_fgvc_splits('cub', folder, seed=1)
    assert b['val.json'] != a['val.json'] and b['test.json'] == a['test.json']
    write_fgvc_splits('cub', folder, seed=0)
    first = open(osp.join(folder, 'val.json')).read()
    write_fgvc_splits('cub', folder, seed=0)
    assert open(osp.join(folder, 'val.json')).read() == first


def test_writer_errors_write_nothing(tmp_path):
    folder, _ = make_cub_layout(str(tmp_path), 'cub', train=2, test=1)
    os.remove(osp.join(folder, 'images', '0007.class', 'img_1.jpg'))
    with pytest.raises(FileNotFoundError,
                       match=r'/images.txt, line 20: image '
                       r'.*0007.class/img_1.jpg does not exist'):
        write_fgvc_splits('cub', folder)
    assert not [f for f in os.listdir(folder) if 'json' in f]


def test_writer_label_outside_classes(tmp_path):
    folder, _ = make_cub_layout(str(tmp_path), 'cub', train=2, test=1)
    path = osp.join(folder, 'image_class_labels.txt')
    lines = open(path).read().splitlines()
    lines[4] = lines[4].split()[0] + ' 201'
    open(path, 'w').write('\n'.join(lines) + '\n')
    with pytest.raises(ValueError, match=r'image_class_labels.txt, line 5: '
                       r'class 201 is outside the 200 classes'):
        write_fgvc_splits('cub', folder)


def test_writer_missing_annotation_file(tmp_path):
    folder = FGVC_MAKERS['stanford_dogs'](str(tmp_path))
    os.remove(osp.join(folder, 'test_list.mat'))
    with pytest.raises(FileNotFoundError, match='test_list.mat'):
        write_fgvc_splits('stanford_dogs', folder)
    with pytest.raises(ValueError, match="'dmlab' is not an FGVC dataset"):
        write_fgvc_splits('dmlab', folder)


def test_cars_needs_labelled_test_annotations(tmp_path):
    import numpy as np
    from scipy.io import savemat
    folder = FGVC_MAKERS['stanford_cars'](str(tmp_path))
    unlabelled = np.zeros((1, 1), dtype=[('fname', 'O')])
    unlabelled[0, 0] = ('00001.jpg', )
    savemat(osp.join(folder, 'cars_test_annos_withlabels.mat'),
            {'annotations': unlabelled})
    with pytest.raises(ValueError, match="no 'class' field"):
        write_fgvc_splits('stanford_cars', folder)


def test_dataset_errors(fgvc_root, tmp_path):
    with pytest.raises(ValueError, match="Unknown split 'train800'"):
        FGVC(task='cub', data_root=fgvc_root, split='train800')
    with pytest.raises(FileNotFoundError, match='dataset folder'):
        FGVC(task='cub', data_root=str(tmp_path), split='train')
    folder = tmp_path / 'CUB_200_2011'
    folder.mkdir()
    (folder / 'train.json').write_text('{"a.jpg": 1}')
    with pytest.raises(FileNotFoundError, match='val.json does not exist'):
        FGVC(task='cub', data_root=str(tmp_path), split='train')
    (folder / 'val.json').write_text('{"b.jpg": 2}')
    (folder / 'test.json').write_text('{"c.jpg": "3"}')
    with pytest.raises(ValueError, match="entry 'c.jpg': class id '3'"):
        FGVC(task='cub', data_root=str(tmp_path), split='train')
    (folder / 'test.json').write_text('{"c.jpg": 3}')
    with pytest.raises(ValueError, match='hold 3 distinct class ids, but '
                       'cub has 200'):
        FGVC(task='cub', data_root=str(tmp_path), split='train')
    ids = {f'{i}.jpg': i for i in range(1, 201)}
    (folder / 'test.json').write_text(json.dumps(ids))
    with pytest.raises(FileNotFoundError,
                       match=r"train.json, entry 'a.jpg': image"):
        FGVC(task='cub', data_root=str(tmp_path), split='train')


def test_writer_checks_every_image_decodes(tmp_path):
    folder, _ = make_cub_layout(str(tmp_path), 'cub', train=2, test=1)
    with open(osp.join(folder, 'images', '0007.class', 'img_1.jpg'),
              'w') as f:
        f.write('not an image')
    with pytest.raises(ValueError, match=r'Image .*0007.class/img_1.jpg '
                       r'does not decode .*1 of \d+ images do not'):
        write_fgvc_splits('cub', folder)
    assert not [f for f in os.listdir(folder) if 'json' in f]


def test_duplicated_json_entry(tmp_path):
    from vpt_mm.datasets.fgvc import read_split_file
    path = tmp_path / 'train.json'
    path.write_text('{"a.jpg": 1, "b.jpg": 2, "a.jpg": 1}')
    with pytest.raises(ValueError, match="entry 'a.jpg' appears twice"):
        read_split_file(str(path))


def test_eval_pipeline_is_the_official_one(tmp_path):
    """The config's FGVC test pipeline equals the official torchvision one
    (Resize(256) on the shorter side, bilinear, then CenterCrop(224)),
    computed by hand with PIL."""
    import numpy as np
    from mmcv.transforms import Compose
    from PIL import Image

    from vpt_mm.config import config_from_file
    cfg = config_from_file(osp.join(osp.dirname(__file__), '..', '..',
                                    'configs/fgvc/vpt_deep_vit-b.py'))
    rng = np.random.RandomState(0)
    rgb = rng.randint(0, 256, (300, 500, 3), dtype=np.uint8)
    path = str(tmp_path / 'img.png')
    Image.fromarray(rgb).save(path)
    pipeline = Compose(cfg.test_dataloader.dataset.pipeline[:-1])
    out = pipeline(dict(img_path=path))['img']  # BGR
    resized = np.asarray(Image.fromarray(rgb).resize((426, 256),
                                                     Image.BILINEAR))
    top, left = int(round((256 - 224) / 2)), int(round((426 - 224) / 2))
    expected = resized[top:top + 224, left:left + 224]
    assert out.shape == (224, 224, 3)
    assert np.array_equal(out[..., ::-1], expected)
