"""TaskFolder: the tuned files of a folder, loaded strictly on one shared
backbone; files added, replaced and removed; bad files rejected with the
reason; old snapshots keep working."""
import os
import shutil

import pytest
import torch

from tests.test_serving.fixtures import (
    make_setup,
    tuned_file,
    write_images,
)
from vpt_mm.apis import VPTInferencer
from vpt_mm.config import resolve_config
from vpt_mm.serving import TaskFolder


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('tasks')
    cfg = make_setup(str(tmp))
    os.makedirs(tmp / 'other')
    other_cfg = make_setup(str(tmp / 'other'), seed=1)  # another backbone
    files = dict(
        deep4=tuned_file(cfg, str(tmp / 'deep4.safetensors'), 0),
        deep1=tuned_file(cfg, str(tmp / 'deep1.safetensors'), 1,
                         num_tokens=1),
        shallow3=tuned_file(cfg, str(tmp / 'shallow3.safetensors'), 2,
                            num_tokens=3, deep=False),
        deep4b=tuned_file(cfg, str(tmp / 'deep4b.safetensors'), 3),
        foreign=tuned_file(other_cfg, str(tmp / 'foreign.safetensors'), 4))
    images = write_images(str(tmp / 'images'), 5)
    return cfg, files, images


def folder_with(tmp_path, files, names):
    tasks = tmp_path / 'tasks'
    tasks.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(files[name], tasks / f'{name}.safetensors')
    return tasks


def test_tasks_load_and_equal_the_offline_inferencer(setup, tmp_path):
    cfg, files, images = setup
    tasks = folder_with(tmp_path, files, ['deep4', 'deep1', 'shallow3'])
    folder = TaskFolder(resolve_config(cfg), str(tasks))
    snap = folder.refresh()
    assert sorted(snap.tasks) == ['deep1', 'deep4', 'shallow3']
    assert not snap.rejected
    info = snap.tasks['deep1']
    assert info.num_tokens == 1 and info.layers == (1, 2)
    assert snap.tasks['shallow3'].layers == (1, )
    assert info.classes == ('bird', 'cat', 'dog')
    assert info.backbone_fingerprint == folder.fingerprint
    # One mixed batch over the three tasks gives what tools/infer.py's
    # inferencer gives for each image and task.
    offline = VPTInferencer(cfg, {n: files[n] for n in snap.tasks})
    probs = offline.probabilities(images)
    reader = offline.reader
    inputs = [reader.prepare(p)['inputs'] for p in images]
    names = ['deep4', 'deep1', 'shallow3', 'deep1', 'deep4']
    batch = folder.base.data_preprocessor(dict(inputs=inputs), False)
    scores = snap.classifier(batch['inputs'], [snap.index(n) for n in names])
    for i, (name, row) in enumerate(zip(names, scores)):
        torch.testing.assert_close(row, probs[name][i], atol=1e-5, rtol=0)


def test_tasks_share_the_frozen_backbone(setup, tmp_path):
    """Each task costs its tuned tensors: the frozen ones are the server's
    single copy."""
    cfg, files, _ = setup
    tasks = folder_with(tmp_path, files, ['deep4', 'deep1'])
    folder = TaskFolder(resolve_config(cfg), str(tasks))
    folder.refresh()
    base = folder.base.backbone.patch_embed.projection.weight
    for model in folder._models.values():
        weight = model.backbone.patch_embed.projection.weight
        assert weight.data_ptr() == base.data_ptr()
        assert model.backbone.prompt.embeddings.data_ptr() != \
            base.data_ptr()


def test_added_replaced_and_removed_files(setup, tmp_path):
    cfg, files, images = setup
    tasks = folder_with(tmp_path, files, ['deep4'])
    folder = TaskFolder(resolve_config(cfg), str(tasks))
    first = folder.refresh()
    assert list(first.tasks) == ['deep4'] and first.version == 1
    assert folder.refresh() is first  # nothing changed, nothing reloaded
    shutil.copy(files['deep1'], tasks / 'deep1.safetensors')
    added = folder.refresh()
    assert sorted(added.tasks) == ['deep1', 'deep4'] and added.version == 2
    # Replaced: other bytes under the same name are loaded again.
    old_sha = added.tasks['deep4'].sha256
    shutil.copy(files['deep4b'], tasks / 'deep4.safetensors')
    os.utime(tasks / 'deep4.safetensors', (1, 1))
    replaced = folder.refresh()
    assert replaced.tasks['deep4'].sha256 != old_sha
    # The snapshot a request was checked against still runs, with the
    # old weights.
    reader = VPTInferencer(cfg, dict(deep4=files['deep4'])).reader
    x = folder.base.data_preprocessor(dict(
        inputs=[reader.prepare(images[0])['inputs']]), False)['inputs']
    old = added.classifier(x, [added.index('deep4')])[0]
    new = replaced.classifier(x, [replaced.index('deep4')])[0]
    assert not torch.allclose(old, new)
    (tasks / 'deep1.safetensors').unlink()
    removed = folder.refresh()
    assert list(removed.tasks) == ['deep4']
    assert added.classifier(x, [added.index('deep1')])[0].shape == (3, )


def test_bad_files_are_rejected_with_the_reason(setup, tmp_path):
    cfg, files, _ = setup
    tasks = folder_with(tmp_path, files, ['deep4', 'foreign'])
    data = open(files['deep1'], 'rb').read()
    (tasks / 'half.safetensors').write_bytes(data[:len(data) // 2])
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    (tasks / 'flipped.safetensors').write_bytes(bytes(flipped))
    (tasks / 'notes.safetensors').write_text('not a tensor file')
    folder = TaskFolder(resolve_config(cfg), str(tasks))
    snap = folder.refresh()
    assert list(snap.tasks) == ['deep4']
    reasons = snap.rejected
    assert set(reasons) == {'foreign.safetensors', 'half.safetensors',
                            'flipped.safetensors', 'notes.safetensors'}
    assert 'fingerprint' in reasons['foreign.safetensors']
    assert 'sha256' in reasons['flipped.safetensors'] or \
        'checksum' in reasons['flipped.safetensors']
    assert 'safetensors' in reasons['half.safetensors']
    # A half-copied file that is completed later is picked up.
    shutil.copy(files['deep1'], tasks / 'half.safetensors')
    snap = folder.refresh()
    assert sorted(snap.tasks) == ['deep4', 'half']
    assert 'half.safetensors' not in snap.rejected


def test_missing_folder_is_an_error(setup, tmp_path):
    cfg, _, _ = setup
    with pytest.raises(FileNotFoundError, match='does not exist'):
        TaskFolder(resolve_config(cfg), str(tmp_path / 'nope'))
