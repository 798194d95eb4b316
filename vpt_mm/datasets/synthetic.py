"""Tiny copies of the benchmarks' real on-disk layouts: the tests' data
and the CPU smoke tests' (``tools/dataset_converters/make_smoke_data.py``).

Images are small random JPEGs whose colour follows the class; annotation
files follow each dataset's official format, ``.mat`` files included
(written with scipy). Nothing here is downloaded.
"""
from __future__ import annotations

import os
import os.path as osp
import uuid
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from scipy.io import savemat

from .benchmarks import get_task


def write_image(path: str, rng: np.random.RandomState,
                label: int = 0,
                size: Optional[Tuple[int, int]] = None) -> None:
    """A random JPEG whose mean brightness depends on ``label``, so that a
    model can learn something from it: small (12-19 pixels a side) unless
    ``size`` (h, w) is given."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    h, w = size or (rng.randint(12, 20), rng.randint(12, 20))
    base = (label * 37) % 200
    img = (base + rng.randint(0, 56, size=(h, w, 3))).astype(np.uint8)
    if not cv2.imwrite(path, img):
        raise OSError(f'Could not write {path}')


def make_vtab_task(root: str,
                   task: str,
                   train: int = 2,
                   val: int = 1,
                   test: int = 1,
                   seed: int = 0,
                   size: Optional[Tuple[int, int]] = None) -> str:
    """A VTAB-1k task folder with ``train``/``val``/``test`` images per
    class (of ``size`` (h, w) if given, see :func:`write_image`) and the
    four split lists; returns the task folder."""
    info = get_task(task)
    rng = np.random.RandomState(seed)
    task_dir = osp.join(root, info.folder)
    lines: Dict[str, List[str]] = dict(train800=[], val200=[], test=[])
    for label in range(info.num_classes):
        for split, num in (('train800', train), ('val200', val),
                           ('test', test)):
            for i in range(num):
                rel = f'images/{split}/{label}_{i}.jpg'
                write_image(osp.join(task_dir, rel), rng, label, size)
                lines[split].append(f'{rel} {label}')
    lines['train800val200'] = lines['train800'] + lines['val200']
    for split, rows in lines.items():
        with open(osp.join(task_dir, f'{split}.txt'), 'w') as f:
            f.write('\n'.join(rows) + '\n')
    return task_dir


def make_imagefolder(root: str,
                     classes: Sequence[str] = ('bird', 'cat', 'dog'),
                     train: int = 4,
                     val: int = 2,
                     seed: int = 0) -> str:
    """An ImageFolder dataset (mmpretrain's ``CustomDataset`` without an
    annotation file): ``train/<class>/*.jpg`` and ``val/<class>/*.jpg``;
    returns ``root``."""
    rng = np.random.RandomState(seed)
    for split, num in (('train', train), ('val', val)):
        for label, name in enumerate(classes):
            for i in range(num):
                write_image(osp.join(root, split, name, f'{name}_{i}.jpg'),
                            rng, label)
    return root


def make_cub_layout(root: str,
                    task: str = 'cub',
                    train: int = 3,
                    test: int = 1,
                    seed: int = 0) -> Tuple[str, List[int]]:
    """CUB-200-2011 (or NABirds, with UUID image ids and sparse class ids)
    official files; returns the dataset folder and the class ids."""
    info = get_task(task)
    rng = np.random.RandomState(seed)
    folder = osp.join(root, info.folder)
    if task == 'nabirds':
        class_ids = sorted(rng.choice(1000, info.num_classes,
                                      replace=False).tolist())
    else:
        class_ids = list(range(1, info.num_classes + 1))
    images, labels, splits = [], [], []
    n = 0
    for class_id in class_ids:
        for i in range(train + test):
            n += 1
            img_id = str(uuid.UUID(int=n)) if task == 'nabirds' else str(n)
            rel = f'{class_id:04d}.class/img_{i}.jpg'
            write_image(osp.join(folder, 'images', rel), rng, class_id)
            images.append(f'{img_id} {rel}')
            labels.append(f'{img_id} {class_id}')
            splits.append(f'{img_id} {int(i < train)}')
    for name, rows in (('images.txt', images),
                       ('image_class_labels.txt', labels),
                       ('train_test_split.txt', splits)):
        with open(osp.join(folder, name), 'w') as f:
            f.write('\n'.join(rows) + '\n')
    return folder, class_ids


def make_flowers_layout(root: str, per_split: int = 1,
                        seed: int = 0) -> str:
    """Oxford Flowers 102: ``jpg/``, ``imagelabels.mat``, ``setid.mat``."""
    info = get_task('oxford_flowers')
    rng = np.random.RandomState(seed)
    folder = osp.join(root, info.folder)
    labels, ids = [], dict(trnid=[], valid=[], tstid=[])
    for class_id in range(1, info.num_classes + 1):
        for key in ids:
            for _ in range(per_split):
                labels.append(class_id)
                image_no = len(labels)
                ids[key].append(image_no)
                write_image(
                    osp.join(folder, f'jpg/image_{image_no:05d}.jpg'), rng,
                    class_id)
    savemat(
        osp.join(folder, 'imagelabels.mat'),
        {'labels': np.array(labels, dtype=np.float64)[None]})
    savemat(
        osp.join(folder, 'setid.mat'),
        {k: np.array(v, dtype=np.float64)[None]
         for k, v in ids.items()})
    return folder


def make_dogs_layout(root: str,
                     train: int = 3,
                     test: int = 1,
                     seed: int = 0) -> str:
    """Stanford Dogs: ``Images/``, ``train_list.mat``, ``test_list.mat``."""
    info = get_task('stanford_dogs')
    rng = np.random.RandomState(seed)
    folder = osp.join(root, info.folder)
    lists = dict(train=([], []), test=([], []))
    for class_id in range(1, info.num_classes + 1):
        for i in range(train + test):
            rel = f'n{class_id:08d}-breed/n{class_id:08d}_{i}.jpg'
            write_image(osp.join(folder, 'Images', rel), rng, class_id)
            files, labels = lists['train' if i < train else 'test']
            files.append(rel)
            labels.append(class_id)
    for split, (files, labels) in lists.items():
        cells = np.empty((len(files), 1), dtype=object)
        for i, f in enumerate(files):
            cells[i, 0] = f
        savemat(
            osp.join(folder, f'{split}_list.mat'), {
                'file_list': cells,
                'annotation_list': cells,
                'labels': np.array(labels, dtype=np.float64)[:, None]
            })
    return folder


def make_cars_layout(root: str,
                     train: int = 3,
                     test: int = 1,
                     seed: int = 0) -> str:
    """Stanford Cars: ``cars_train/``, ``cars_test/``, the devkit's
    ``cars_train_annos.mat`` and ``cars_test_annos_withlabels.mat``."""
    info = get_task('stanford_cars')
    rng = np.random.RandomState(seed)
    folder = osp.join(root, info.folder)
    dtype = [(f, 'O') for f in ('bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2',
                                'class', 'fname')]
    rows = dict(train=[], test=[])
    for class_id in range(1, info.num_classes + 1):
        for i in range(train + test):
            split = 'train' if i < train else 'test'
            fname = f'{len(rows[split]) + 1:05d}.jpg'
            write_image(
                osp.join(folder, f'cars_{split}', fname), rng, class_id)
            rows[split].append((1, 1, 10, 10, class_id, fname))
    for split, path in (('train', 'devkit/cars_train_annos.mat'),
                        ('test', 'cars_test_annos_withlabels.mat')):
        annos = np.zeros((1, len(rows[split])), dtype=dtype)
        for i, row in enumerate(rows[split]):
            annos[0, i] = row
        os.makedirs(osp.dirname(osp.join(folder, path)), exist_ok=True)
        savemat(osp.join(folder, path), {'annotations': annos})
    return folder


#: Maker of each FGVC dataset's official layout.
FGVC_MAKERS = {
    'cub': lambda root: make_cub_layout(root, 'cub')[0],
    'nabirds': lambda root: make_cub_layout(root, 'nabirds')[0],
    'oxford_flowers': make_flowers_layout,
    'stanford_dogs': make_dogs_layout,
    'stanford_cars': make_cars_layout,
}


def make_ade20k_layout(root: str,
                       train: int = 4,
                       val: int = 2,
                       size: Tuple[int, int] = (48, 80),
                       seed: int = 0) -> str:
    """ADEChallengeData2016 in miniature: ``images/{training,validation}``
    JPEGs and ``annotations/{training,validation}`` label PNGs with 0 =
    ignore ("other") and classes 1..150, as ADE20K stores them (mmseg's
    ``reduce_zero_label`` maps them to 255 and 0..149). Each image is split
    into a few class regions whose colour follows the class, so a model can
    learn something. Returns the dataset root."""
    rng = np.random.RandomState(seed)
    data_root = osp.join(root, 'ADEChallengeData2016')
    h, w = size
    for split, num in (('training', train), ('validation', val)):
        for i in range(num):
            name = f'ADE_{split[:5]}_{i:08d}'
            label = np.zeros((h, w), np.uint8)
            classes = rng.randint(1, 151, size=3)
            label[:, :w // 3] = classes[0]
            label[:, w // 3:2 * w // 3] = classes[1]
            label[:, 2 * w // 3:] = classes[2]
            label[:h // 6] = 0  # an ignored band
            img = ((label.astype(np.int64) * 37) % 200)[..., None] + \
                rng.randint(0, 56, size=(h, w, 3))
            for sub, arr, ext in (('images', img.astype(np.uint8), 'jpg'),
                                  ('annotations', label, 'png')):
                path = osp.join(data_root, sub, split, f'{name}.{ext}')
                os.makedirs(osp.dirname(path), exist_ok=True)
                if not cv2.imwrite(path, arr):
                    raise OSError(f'Could not write {path}')
    return data_root
