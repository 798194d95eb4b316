"""Write the FGVC ``train.json`` / ``val.json`` / ``test.json`` files from
each dataset's official annotation files.

The reference implementation's split files are behind dead links; these
writers rebuild them from what each dataset ships:

=================  ==========================================================
dataset            official files read
=================  ==========================================================
cub, nabirds       ``images.txt``, ``image_class_labels.txt``,
                   ``train_test_split.txt`` (images under ``images/``)
oxford_flowers     ``imagelabels.mat``, ``setid.mat`` (images ``jpg/``);
                   the official val split is kept
stanford_dogs      ``train_list.mat``, ``test_list.mat`` (images ``Images/``)
stanford_cars      ``cars_train_annos.mat`` (devkit) and
                   ``cars_test_annos_withlabels.mat`` (images
                   ``cars_train/``, ``cars_test/``)
=================  ==========================================================

Where a dataset has no val split, its train split is divided at random into
90% train / 10% val with a seeded permutation of the sorted image list: the
same seed gives the same files. Class ids are written as the dataset
defines them; :class:`~vpt_mm.datasets.FGVC` remaps them to 0..C-1.
Every image is checked to exist and every label to lie in the dataset's
classes before anything is written, and the three files are replaced
together, so a failed run leaves no partial output.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..fileio import atomic_replace
from .benchmarks import get_task

Split = Dict[str, int]
# relative image path, class id, where the path and the class are read
Entry = Tuple[str, int, str, str]


def _read_columns(path: str, num_cols: int = 2) -> List[Tuple[str, ...]]:
    """Read a whitespace-separated annotation file; the last column may hold
    spaces only when ``num_cols`` is 2."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'Annotation file {path} does not exist')
    rows = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=num_cols - 1)
            if len(parts) != num_cols:
                raise ValueError(f'{path}, line {line_no}: expected '
                                 f'{num_cols} columns, got {line.strip()!r}')
            rows.append((*[p.strip() for p in parts], line_no))
    return rows


def _int(value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f'{where}: {value!r} is not an integer') from None


def _cub_layout(root: str) -> Tuple[List[Entry], List[Entry], None]:
    """CUB-200-2011 and NABirds: three id-keyed text files."""
    images_txt = osp.join(root, 'images.txt')
    labels_txt = osp.join(root, 'image_class_labels.txt')
    split_txt = osp.join(root, 'train_test_split.txt')
    paths = {
        img_id: (path, f'{images_txt}, line {n}')
        for img_id, path, n in _read_columns(images_txt)
    }
    labels = {
        img_id: (_int(c, f'{labels_txt}, line {n}'), f'{labels_txt}, line {n}')
        for img_id, c, n in _read_columns(labels_txt)
    }
    train, test = [], []
    for img_id, flag, n in _read_columns(split_txt):
        where = f'{split_txt}, line {n}'
        if img_id not in paths:
            raise ValueError(f'{where}: image id {img_id} is not in '
                             f'{images_txt}')
        if img_id not in labels:
            raise ValueError(f'{where}: image id {img_id} has no label in '
                             f'{labels_txt}')
        if flag not in ('0', '1'):
            raise ValueError(f'{where}: is_training_image must be 0 or 1, '
                             f'got {flag!r}')
        path, path_where = paths[img_id]
        label, label_where = labels[img_id]
        (train if flag == '1' else test).append(
            (path, label, path_where, label_where))
    return train, test, None


def _loadmat(path: str) -> dict:
    from scipy.io import loadmat
    if not osp.isfile(path):
        raise FileNotFoundError(f'Annotation file {path} does not exist')
    return loadmat(path, squeeze_me=True)


def _mat_key(mat: dict, key: str, path: str) -> np.ndarray:
    if key not in mat:
        keys = sorted(k for k in mat if not k.startswith('__'))
        raise ValueError(f'{path} has no {key!r} entry (keys: {keys})')
    return np.atleast_1d(mat[key])


def _flowers_layout(root: str) -> Tuple[List[Entry], List[Entry],
                                        List[Entry]]:
    """Oxford Flowers 102: ``imagelabels.mat`` and ``setid.mat``."""
    labels_mat = osp.join(root, 'imagelabels.mat')
    setid_mat = osp.join(root, 'setid.mat')
    labels = _mat_key(_loadmat(labels_mat), 'labels', labels_mat)
    setid = _loadmat(setid_mat)

    def entries(key: str) -> List[Entry]:
        out = []
        for i, image_no in enumerate(_mat_key(setid, key, setid_mat)):
            where = f'{setid_mat}, {key}[{i}]'
            if not 1 <= int(image_no) <= len(labels):
                raise ValueError(f'{where}: image number {image_no} is not '
                                 f'in 1..{len(labels)} of {labels_mat}')
            out.append((f'jpg/image_{int(image_no):05d}.jpg',
                        int(labels[int(image_no) - 1]), where,
                        f'{labels_mat}, labels[{int(image_no) - 1}]'))
        return out

    return entries('trnid'), entries('tstid'), entries('valid')


def _dogs_layout(root: str) -> Tuple[List[Entry], List[Entry], None]:
    """Stanford Dogs: ``train_list.mat`` and ``test_list.mat``."""

    def entries(name: str) -> List[Entry]:
        path = osp.join(root, name)
        mat = _loadmat(path)
        files = _mat_key(mat, 'file_list', path)
        labels = _mat_key(mat, 'labels', path)
        if len(files) != len(labels):
            raise ValueError(f'{path}: {len(files)} files but '
                             f'{len(labels)} labels')
        return [(str(f), int(c), f'{path}, file_list[{i}]',
                 f'{path}, labels[{i}]')
                for i, (f, c) in enumerate(zip(files, labels))]

    return entries('train_list.mat'), entries('test_list.mat'), None


def _find(root: str, candidates: List[str]) -> str:
    for rel in candidates:
        if osp.isfile(osp.join(root, rel)):
            return osp.join(root, rel)
    raise FileNotFoundError(
        f'None of {candidates} exists under {root}')


def _cars_layout(root: str) -> Tuple[List[Entry], List[Entry], None]:
    """Stanford Cars: the devkit's train annotations and the labelled test
    annotations, both ``annotations`` struct arrays with ``fname`` and
    ``class`` fields."""
    train_mat = _find(root, ['devkit/cars_train_annos.mat',
                             'cars_train_annos.mat'])
    test_mat = _find(root, ['cars_test_annos_withlabels.mat',
                            'devkit/cars_test_annos_withlabels.mat'])

    def entries(path: str, folder: str) -> List[Entry]:
        annos = _mat_key(_loadmat(path), 'annotations', path)
        names = annos.dtype.names or ()
        for field in ('fname', 'class'):
            if field not in names:
                raise ValueError(f'{path}: annotations have no {field!r} '
                                 f'field (fields: {names}); the test file '
                                 'must be the labelled one '
                                 '(cars_test_annos_withlabels.mat)')
        return [(f'{folder}/{a["fname"]}', int(a['class']),
                 f'{path}, annotations[{i}]', f'{path}, annotations[{i}]')
                for i, a in enumerate(annos)]

    return entries(train_mat, 'cars_train'), entries(test_mat,
                                                     'cars_test'), None


#: Reader of each dataset's official annotations, and whether its class ids
#: are 1..C (checked per entry) rather than sparse (NABirds).
READERS: Dict[str, Tuple[Callable, bool]] = {
    'cub': (_cub_layout, True),
    'nabirds': (_cub_layout, False),
    'oxford_flowers': (_flowers_layout, True),
    'stanford_dogs': (_dogs_layout, True),
    'stanford_cars': (_cars_layout, True),
}


def build_fgvc_splits(task: str,
                      root: str,
                      seed: int = 0,
                      val_fraction: float = 0.1) -> Dict[str, Split]:
    """Build the three splits of an FGVC dataset from its official files.

    Args:
        task (str): ``'cub'``, ``'nabirds'``, ``'oxford_flowers'``,
            ``'stanford_dogs'`` or ``'stanford_cars'``.
        root (str): The dataset folder (holding the annotation files and
            the image folder).
        seed (int): Seed of the train/val split. Defaults to 0.
        val_fraction (float): Fraction of the official train split held out
            as val where the dataset has none. Defaults to 0.1.

    Returns:
        dict: ``{'train.json': {...}, 'val.json': {...}, 'test.json': {...}}``
        mapping image paths (relative to the image folder) to class ids.
    """
    info = get_task(task)
    if task not in READERS:
        raise ValueError(f'{task!r} is not an FGVC dataset; choose from '
                         f'{sorted(READERS)}')
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f'val_fraction must be in (0, 1), got {val_fraction}')
    if not osp.isdir(root):
        raise FileNotFoundError(f'Dataset folder {root} does not exist')
    reader, contiguous = READERS[task]
    train, test, val = reader(root)
    if val is None:
        train = sorted(train)
        perm = np.random.RandomState(seed).permutation(len(train))
        num_val = int(round(val_fraction * len(train)))
        val = [train[i] for i in sorted(perm[:num_val])]
        train = [train[i] for i in sorted(perm[num_val:])]

    img_root = osp.join(root, info.img_prefix)
    class_ids = set()
    splits = {}
    for name, entries in (('train.json', train), ('val.json', val),
                          ('test.json', test)):
        split = {}
        for rel_path, class_id, where, label_where in entries:
            if contiguous and not 1 <= class_id <= info.num_classes:
                raise ValueError(
                    f'{label_where}: class {class_id} is outside the '
                    f'{info.num_classes} classes of {task} '
                    f'(1..{info.num_classes})')
            if not osp.isfile(osp.join(img_root, rel_path)):
                raise FileNotFoundError(
                    f'{where}: image {osp.join(img_root, rel_path)} does '
                    'not exist')
            if rel_path in split:
                raise ValueError(f'{where}: image {rel_path} is listed '
                                 'twice')
            split[rel_path] = class_id
            class_ids.add(class_id)
        splits[name] = split
    if len(class_ids) != info.num_classes:
        raise ValueError(f'{root}: found {len(class_ids)} distinct classes, '
                         f'{task} has {info.num_classes}')
    check_images_decode(
        sorted({osp.join(img_root, p) for split in splits.values()
                for p in split}))
    return splits


def _decode_error(path: str) -> Optional[str]:
    from PIL import Image
    try:
        with Image.open(path) as img:
            img.load()
    except Exception as err:  # any reason an image cannot be used
        return f'{type(err).__name__}: {err}'
    return None


def check_images_decode(paths: List[str], workers: int = 8) -> None:
    """Decode every image fully (PIL, in threads).

    Raises:
        ValueError: Naming the first image that does not decode, and how
            many do not.
    """
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=workers) as pool:
        errors = [(p, e) for p, e in zip(paths, pool.map(_decode_error, paths))
                  if e is not None]
    if errors:
        path, err = errors[0]
        raise ValueError(
            f'Image {path} does not decode ({err}); {len(errors)} of '
            f'{len(paths)} images do not. Nothing was written.')


def write_fgvc_splits(task: str,
                      root: str,
                      out_dir: Optional[str] = None,
                      seed: int = 0,
                      val_fraction: float = 0.1) -> Dict[str, int]:
    """Build the splits (:func:`build_fgvc_splits`) and write the three json
    files together: all or nothing.

    Args:
        task (str): FGVC dataset name.
        root (str): The dataset folder.
        out_dir (str, optional): Where to write; defaults to ``root``, where
            :class:`~vpt_mm.datasets.FGVC` reads them.
        seed (int): Seed of the train/val split. Defaults to 0.
        val_fraction (float): Val fraction where there is no val split.
            Defaults to 0.1.

    Returns:
        dict: Number of images per written file.
    """
    splits = build_fgvc_splits(task, root, seed, val_fraction)
    out_dir = root if out_dir is None else out_dir
    os.makedirs(out_dir, exist_ok=True)
    tmp_files = []
    try:
        for name, split in splits.items():
            tmp = osp.join(out_dir, f'.{name}.tmp')
            tmp_files.append(tmp)
            with open(tmp, 'w') as f:
                json.dump(split, f, indent=0, sort_keys=True)
                f.write('\n')
        # All three written before any replaces its previous version.
        for name, tmp in zip(splits, tmp_files):
            atomic_replace(tmp, osp.join(out_dir, name))
    finally:
        for tmp in tmp_files:
            if osp.exists(tmp):
                os.remove(tmp)
    return {name: len(split) for name, split in splits.items()}
