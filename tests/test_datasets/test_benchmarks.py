import pytest

from vpt_mm.datasets import GROUPS, TASKS, get_task, tasks_of
from vpt_mm.datasets.benchmarks import stratified_subset

# SPEC.md section 5.
VTAB_CLASSES = dict(
    caltech101=102, cifar100=100, dtd=47, oxford_flowers102=102,
    oxford_iiit_pet=37, svhn=10, sun397=397, patch_camelyon=2, eurosat=10,
    resisc45=45, diabetic_retinopathy=5, clevr_count=8, clevr_dist=6,
    dmlab=6, kitti_dist=4, dsprites_loc=16, dsprites_ori=16,
    smallnorb_azi=18, smallnorb_ele=9)
FGVC_CLASSES = dict(cub=200, nabirds=555, oxford_flowers=102,
                    stanford_dogs=120, stanford_cars=196)


def test_task_table():
    assert {n: TASKS[n].num_classes
            for n in tasks_of('vtab1k')} == VTAB_CLASSES
    assert {n: TASKS[n].num_classes for n in tasks_of('fgvc')} == FGVC_CLASSES
    sizes = {g: sum(TASKS[n].group == g for n in TASKS)
             for g in GROUPS['vtab1k']}
    assert sizes == dict(Natural=7, Specialized=4, Structured=8)
    assert TASKS['sun397'].group == 'Natural'
    assert TASKS['diabetic_retinopathy'].group == 'Specialized'
    assert TASKS['kitti_dist'].group == 'Structured'
    assert TASKS['cub'].img_prefix == 'images'
    assert TASKS['stanford_dogs'].img_prefix == 'Images'
    assert TASKS['stanford_cars'].img_prefix == ''


def test_unknown_task():
    with pytest.raises(ValueError, match="Unknown task 'dmlb'.*dmlab"):
        get_task('dmlb')
    with pytest.raises(ValueError, match='Unknown benchmark'):
        tasks_of('vtab')


def test_stratified_subset():
    labels = [0] * 10 + [1] * 20 + [2] * 1
    keep = stratified_subset(labels, 0.5, seed=0)
    kept = [labels[i] for i in keep]
    assert kept.count(0) == 5 and kept.count(1) == 10 and kept.count(2) == 1
    assert keep == sorted(keep)
    assert stratified_subset(labels, 0.5, seed=0) == keep
    assert stratified_subset(labels, 0.5, seed=1) != keep
    assert stratified_subset(labels, 1.0, seed=0) == list(range(31))
    with pytest.raises(ValueError, match='train_fraction'):
        stratified_subset(labels, 0.0, seed=0)
