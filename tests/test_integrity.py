import random

import numpy as np
import pytest
import torch

from tests.test_checkpoints import classifier
from vpt_mm.checkpoints import (
    checkpoint_record,
    frozen_keys,
    load_full_checkpoint,
    load_tuned,
    omit_frozen,
    save_tuned,
    verify_checkpoint,
)
from vpt_mm.engine import latest_checkpoint
from vpt_mm.integrity import (
    backbone_fingerprint,
    check_finite,
    digest,
    rng_state,
    set_rng_state,
)
from vpt_mm.tuning import checkpoint_sizes


def test_digest_is_order_independent_and_sensitive():
    a = {'x': torch.arange(4.), 'y': [1, 2.5, None, 'z']}
    b = {'y': [1, 2.5, None, 'z'], 'x': torch.arange(4.)}
    assert digest(a) == digest(b)
    assert digest(a) != digest({'x': torch.arange(4.).double(), 'y': a['y']})
    c = {'x': torch.arange(4.), 'y': [1, 2.5, None, 'z']}
    c['x'][2] = 2.0000002
    assert digest(a) != digest(c)
    assert digest(torch.zeros(2, 3)) != digest(torch.zeros(3, 2))
    with pytest.raises(TypeError, match='Cannot checksum'):
        digest(object())


def test_fingerprint_follows_the_frozen_tensors():
    model = classifier()
    before = backbone_fingerprint(model.backbone, ['prompt.embeddings'])
    with torch.no_grad():
        model.backbone.prompt.embeddings.add_(1)  # tuned: excluded
    assert backbone_fingerprint(model.backbone,
                                ['prompt.embeddings']) == before
    with torch.no_grad():
        model.backbone.layers[0].ln1.weight.add_(1e-3)  # frozen
    assert backbone_fingerprint(model.backbone,
                                ['prompt.embeddings']) != before


@pytest.mark.parametrize('how', ['data', 'numpy', 'new_model'])
def test_fingerprint_is_never_stale(how):
    """Writes no version counter sees, and another model in the memory of a
    freed one, change the fingerprint."""
    model = classifier()
    before = backbone_fingerprint(model.backbone, ['prompt.embeddings'])
    weight = model.backbone.patch_embed.projection.weight
    if how == 'data':
        weight.data.add_(torch.randn_like(weight))
    elif how == 'numpy':
        weight.detach().numpy()[0] += 1.0
    else:
        state = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        del model, weight
        model = classifier()
        state['patch_embed.projection.weight'] += 1.0
        model.backbone.load_state_dict(state)
    assert backbone_fingerprint(model.backbone,
                                ['prompt.embeddings']) != before


def test_rng_state_round_trip():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_rng_state_of_more_cuda_devices_than_present(monkeypatch):
    """A checkpoint saved with 2 visible GPUs restores on 1: device 0's
    state is set, device 1's is reported (it used to raise IndexError in
    torch.cuda.set_rng_state_all)."""
    state = rng_state()
    state['cuda'] = [torch.zeros(16, dtype=torch.uint8),
                     torch.ones(16, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(torch.cuda, 'set_rng_state',
                        lambda s, device='cuda': restored.append((device, s)))
    with pytest.warns(UserWarning, match=r'2 CUDA devices were saved; this '
                      r'process sees 1: the states of devices \[1\]'):
        set_rng_state(state)
    assert [d for d, _ in restored] == [0]
    assert torch.equal(restored[0][1], state['cuda'][0])


def test_rng_state_after_a_map_location(tmp_path):
    """States loaded through a map_location (as mmengine's resume loads
    them) restore as saved ones do."""
    torch.save(rng_state(), tmp_path / 'rng.pth')
    first = (random.random(), np.random.rand(), torch.rand(3))
    state = torch.load(tmp_path / 'rng.pth', weights_only=True,
                       map_location=lambda storage, _: storage)
    set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_check_finite_names_the_tensor():
    with pytest.raises(ValueError, match=r"'b' holds 1 non-finite"):
        check_finite({'a': torch.ones(2), 'b': torch.tensor([1., np.nan])},
                     'ckpt')


def test_tuned_file_on_another_backbone(tmp_path, pretrained):
    model = classifier(pretrained=pretrained)
    model.init_weights()
    path = str(tmp_path / 'task.safetensors')
    save_tuned(model, path)
    random_backbone = classifier(pretrained=None)
    with pytest.raises(ValueError, match='trained on the frozen backbone '
                       'with fingerprint [0-9a-f]{64}, but the model.s '
                       'backbone has fingerprint [0-9a-f]{64}'):
        load_tuned(random_backbone, path)
    load_tuned(random_backbone, path, allow_other_backbone=True)
    assert torch.equal(random_backbone.head.fc.weight, model.head.fc.weight)


def test_corrupted_or_old_tuned_file(tmp_path, pretrained):
    model = classifier(pretrained=pretrained)
    model.init_weights()
    path = str(tmp_path / 'task.safetensors')
    save_tuned(model, path)
    data = bytearray(open(path, 'rb').read())
    data[-7] ^= 0x01
    bad = str(tmp_path / 'bad.safetensors')
    open(bad, 'wb').write(bytes(data))
    with pytest.raises(ValueError, match='is corrupted'):
        load_tuned(model, bad)
    from safetensors.torch import save_file
    old = str(tmp_path / 'old.safetensors')
    save_file({'head.fc.bias': torch.zeros(3)}, old,
              metadata=dict(format='vpt_mm.tuned.v1'))
    with pytest.raises(ValueError, match='older vpt_mm without a checksum'):
        load_tuned(model, old)


def test_nan_tensors_are_never_saved(tmp_path):
    model = classifier()
    with torch.no_grad():
        model.backbone.prompt.embeddings.fill_(float('nan'))
    with pytest.raises(ValueError, match='non-finite'):
        save_tuned(model, str(tmp_path / 'nan.safetensors'))


def test_full_checkpoint_checks(tmp_path):
    model = classifier()
    state = dict(model.state_dict())
    load_full_checkpoint(classifier(), state, 'ckpt')
    with pytest.raises(ValueError, match="key 'head.fc.bias' is missing"):
        load_full_checkpoint(model, {k: v for k, v in state.items()
                                     if k != 'head.fc.bias'}, 'ckpt')
    with pytest.raises(ValueError, match="key 'extra' is unexpected"):
        load_full_checkpoint(model, dict(state, extra=torch.ones(1)), 'ckpt')
    with pytest.raises(ValueError, match=r"\(4, 5, 32\) in the checkpoint, "
                       r'\(4, 2, 32\) in the model'):
        load_full_checkpoint(classifier(num_tokens=2), state, 'ckpt')
    nan = dict(state, **{'head.fc.bias': torch.full((3, ), float('nan'))})
    with pytest.raises(ValueError, match='non-finite'):
        load_full_checkpoint(model, nan, 'ckpt')
    # A checkpoint without vpt_mm's record is not verified (but loads).
    assert verify_checkpoint(dict(meta={}, state_dict=state), 'x') is False


def test_small_checkpoint_needs_its_backbone(pretrained):
    """A checkpoint saved without the frozen backbone loads onto the
    pretrained one, strictly, and only onto that one."""
    model = classifier(pretrained=pretrained)
    model.init_weights()
    with torch.no_grad():
        model.backbone.prompt.embeddings.add_(1.0)
        model.head.fc.weight.add_(1.0)
    frozen = frozen_keys(model)
    assert 'backbone.layers.0.attn.qkv.weight' in frozen
    assert not {'backbone.prompt.embeddings', 'head.fc.weight'} & frozen
    state = omit_frozen(model, model.state_dict())
    assert set(state) == set(model.state_dict()) - frozen
    record = checkpoint_record(model, dict(state_dict=state), omits=True)
    fresh = classifier(pretrained=pretrained)
    fresh.init_weights()
    load_full_checkpoint(fresh, state, 'small.pth', record)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # Another (random) backbone is refused, naming both fingerprints...
    with pytest.raises(ValueError, match='trained on the frozen backbone '
                       'with fingerprint'):
        load_full_checkpoint(classifier(), state, 'small.pth', record)
    # ...a missing tuned key too; a whole checkpoint must stay whole.
    with pytest.raises(ValueError, match="'head.fc.bias' is missing"):
        load_full_checkpoint(fresh, {k: v for k, v in state.items()
                                     if k != 'head.fc.bias'}, 'small.pth',
                             record)
    with pytest.raises(ValueError, match='is missing from the checkpoint'):
        load_full_checkpoint(fresh, state, 'small.pth')
    # Nothing frozen (full fine-tuning): nothing to omit.
    model.backbone.requires_grad_(True)
    assert frozen_keys(model) == set()
    assert omit_frozen(model, model.state_dict()) is None


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(str(tmp_path)) is None
    for step in (1, 2, 10):
        (tmp_path / f'epoch_{step}.pth').write_bytes(b'x')
    (tmp_path / 'epoch_11.pth.tmp').write_bytes(b'half')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_2.pth'))
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')
    (tmp_path / 'last_checkpoint').write_text('')  # killed while written
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_10.pth')


def test_tuned_file_mode_follows_the_umask(tmp_path):
    import os
    path = str(tmp_path / 'task.safetensors')
    save_tuned(classifier(), path)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def _training_checkpoint(path, model):
    """A checkpoint as VPTCheckpointHook writes it (with its record)."""
    from vpt_mm.checkpoints import CHECKPOINT_META_KEY, checkpoint_record
    ckpt = dict(meta=dict(epoch=1), state_dict=model.state_dict())
    ckpt['meta'][CHECKPOINT_META_KEY] = checkpoint_record(model, ckpt)
    torch.save(ckpt, path)


def test_mmengine_loaders_check_vpt_mm_checkpoints(tmp_path):
    """mmengine's generic, non-strict load_checkpoint (what mmpretrain's
    inferencer calls) verifies and strictly loads a vpt_mm checkpoint."""
    from mmengine.runner import load_checkpoint
    path = str(tmp_path / 'epoch_1.pth')
    _training_checkpoint(path, classifier(num_tokens=5))
    load_checkpoint(classifier(num_tokens=5), path)
    with pytest.raises(ValueError, match=r"prompt.embeddings' has shape "
                       r'\(4, 5, 32\) in the checkpoint, \(4, 2, 32\)'):
        load_checkpoint(classifier(num_tokens=2), path)
    ckpt = torch.load(path)
    ckpt['state_dict']['head.fc.bias'] = ckpt['state_dict'][
        'head.fc.bias'] + 1
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match='is corrupted'):
        load_checkpoint(classifier(num_tokens=5), path)
    # A checkpoint vpt_mm did not write keeps mmengine's behaviour.
    plain = str(tmp_path / 'plain.pth')
    torch.save(dict(state_dict=classifier(num_tokens=5).state_dict()), plain)
    load_checkpoint(classifier(num_tokens=2), plain)


def test_checkpoint_sizes():
    """count_params.py's checkpoint sizes: a frozen backbone is left out,
    full fine-tuning keeps everything; optimizer state is counted."""
    model = classifier()
    sgd = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9))
    small, whole = checkpoint_sizes(model, sgd)
    assert small < 0.25 * whole
    adam = dict(optimizer=dict(type='AdamW', lr=0.1))
    assert checkpoint_sizes(classifier(), adam)[0] > small  # two moments
    model.backbone.requires_grad_(True)
    small, whole = checkpoint_sizes(model, sgd)
    assert small == whole


def test_checkpoint_sizes_log_one_line_not_one_per_frozen_tensor():
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    lines = []
    handler = __import__('logging').Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger.addHandler(handler)
    try:
        checkpoint_sizes(classifier(), dict(optimizer=dict(type='SGD',
                                                           lr=0.1)))
    finally:
        logger.removeHandler(handler)
    assert not [m for m in lines if 'is skipped since' in m]
    assert any('frozen parameter tensors' in m for m in lines)


def _interrupted(*args, **kwargs):
    raise KeyboardInterrupt  # a kill or Ctrl-C in the middle of a write


@pytest.mark.parametrize('writer', ['write_json', 'tuned', 'converter',
                                    'results', 'figure'])
def test_an_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch,
                                                      writer):
    """Every file the package writes is complete or its previous version:
    a write interrupted half-way (here: the serialiser raises after the
    temporary file was opened) leaves the old file and no temporary."""
    import json as json_module
    import os

    from vpt_mm.fileio import atomic_file
    path = str(tmp_path / ('bars.png' if writer == 'figure' else
                           f'out.{writer}'))
    with open(path, 'w') as f:
        f.write('previous')

    def half_written(f):
        f.write('{"trunc')
        raise KeyboardInterrupt

    if writer == 'write_json':
        from vpt_mm.fileio import write_json
        monkeypatch.setattr(json_module, 'dumps', _interrupted)
        call = lambda: write_json({'a': 1}, path)  # noqa: E731
    elif writer == 'tuned':
        import safetensors.torch
        real = safetensors.torch.save_file

        def partial(state, tmp, metadata=None):
            real(state, tmp, metadata=metadata)
            raise KeyboardInterrupt
        monkeypatch.setattr(safetensors.torch, 'save_file', partial)
        call = lambda: save_tuned(classifier(), path)  # noqa: E731
    elif writer == 'converter':
        from vpt_mm.converters.common import save_backbone_checkpoint
        real = torch.save

        def partial(obj, f, *a, **k):
            with open(f, 'wb') as out:
                out.write(b'PK\x03\x04trunc')
            raise KeyboardInterrupt
        monkeypatch.setattr(torch, 'save', partial)
        call = lambda: save_backbone_checkpoint(  # noqa: E731
            {'w': torch.zeros(2)}, path, 'test')
    elif writer == 'results':
        def call():
            with atomic_file(path) as f:
                half_written(f)
    else:
        import matplotlib.figure

        from vpt_mm.evaluation.figures import plot_bars
        monkeypatch.setattr(matplotlib.figure.Figure, 'savefig',
                            lambda self, tmp, **k: open(tmp, 'w').write('x')
                            and _interrupted())
        call = lambda: plot_bars([dict(name='a', mean=1.0, std=0.1)],  # noqa
                                 'title', 'acc', path)
    with pytest.raises(KeyboardInterrupt):
        call()
    with open(path) as f:
        assert f.read() == 'previous'
    assert os.listdir(tmp_path) == [os.path.basename(path)]
