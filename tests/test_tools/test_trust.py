"""Every path that produces a number is right or fails loudly: real runs of
tools/train.py and tools/test.py on the demo's tiny VPT-Deep (default
prompt dropout 0.1), killed with SIGKILL, fed wrong or corrupted files."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.test_tools.test_train import REPO, run, write_config

pytestmark = pytest.mark.slow
KILL_IMPORTS = ("custom_imports = dict(imports=['vpt_mm', "
                "'tests.test_tools.kill_hook'], allow_failed_imports=False)\n")


def fails(cmd, **kwargs):
    """Run a command that must fail; its output."""
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, env=env, **kwargs)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    return out


def train(cfg, work, *args):
    return run([sys.executable, 'tools/train.py', cfg, '--work-dir', work,
                *args])


def eval_cmd(cfg, ckpt, work, *args):
    return [sys.executable, 'tools/test.py', cfg, ckpt, '--work-dir', work,
            *args]


def final_state(path):
    return torch.load(path)['state_dict']


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One short VPT-Deep run: its config, work dir and tuned-only file."""
    tmp = tmp_path_factory.mktemp('trained')
    cfg = write_config(tmp, epochs=1)
    work = str(tmp / 'work')
    train(cfg, work)
    tuned = str(tmp / 'task.safetensors')
    run([sys.executable, 'tools/model_converters/extract_tuned.py', cfg,
         osp.join(work, 'epoch_1.pth'), tuned])
    return tmp, cfg, work, tuned


def test_full_checkpoint_must_fit(trained):
    tmp, cfg, work, _ = trained
    ckpt = osp.join(work, 'epoch_1.pth')
    out = fails(eval_cmd(cfg, ckpt, work, '--cfg-options',
                     'model.backbone.prompt_cfg.num_tokens=4'))
    assert "'backbone.prompt.embeddings' has shape (4, 8, 64) in the " \
        'checkpoint, (4, 4, 64) in the model' in out
    # The backbone-only "pre-training" checkpoint on the transfer config.
    out = fails(eval_cmd(cfg, str(tmp / 'pretrained.pth'), work))
    assert 'does not fit the model: key' in out and 'missing from' in out
    # load_from is as strict.
    out = fails([sys.executable, 'tools/train.py', cfg, '--work-dir',
                 str(tmp / 'w2'), '--cfg-options', f'load_from={ckpt}',
                 'model.head.num_classes=3'])
    assert "'head.fc.weight' has shape (5, 64) in the checkpoint, (3, 64)" \
        in out
    # --resume with another prompt length fails before any step.
    out = fails([sys.executable, 'tools/train.py', cfg, '--work-dir', work,
                 '--resume', '--cfg-options',
                 'model.backbone.prompt_cfg.num_tokens=4',
                 'train_cfg.max_epochs=2'])
    assert 'backbone.prompt.embeddings' in out and 'Epoch(train)' not in out


def test_training_checkpoints_hold_what_trains(trained, tmp_path):
    """A VPT run's checkpoints hold the prompts, the head, the optimizer,
    scheduler and RNG states, not the frozen backbone; tools/test.py and
    --resume rebuild it from the pretrained checkpoint, verified.
    ``save_frozen=True`` keeps whole checkpoints."""
    tmp, cfg, work, tuned = trained
    ckpt = osp.join(work, 'epoch_1.pth')
    backbone = torch.load(str(tmp / 'pretrained.pth'))['state_dict']
    backbone_bytes = sum(v.numel() * v.element_size()
                         for v in backbone.values())
    assert osp.getsize(ckpt) <= 0.25 * backbone_bytes, (
        osp.getsize(ckpt), backbone_bytes)
    small = torch.load(ckpt)
    assert small['meta']['vpt_mm']['omits_frozen'] is True
    assert set(small['state_dict']) == set(load_file(tuned))
    assert {'optimizer', 'param_schedulers', 'rng_state'} <= set(small)
    # Without the pretrained backbone it is refused, naming fingerprints.
    out = fails(eval_cmd(cfg, ckpt, work, '--cfg-options',
                     'model.backbone.init_cfg=None'))
    assert 'was trained on the frozen backbone with fingerprint' in out
    # The option keeps whole checkpoints; they evaluate the same.
    whole = str(tmp_path / 'whole')
    train(cfg, whole, '--cfg-options',
          'default_hooks.checkpoint.save_frozen=True')
    big = torch.load(osp.join(whole, 'epoch_1.pth'))
    assert big['meta']['vpt_mm']['omits_frozen'] is False
    assert set(big['state_dict']) >= set(backbone)
    for key, value in small['state_dict'].items():
        assert torch.equal(big['state_dict'][key], value), key
    outs = [str(tmp_path / 'small.json'), str(tmp_path / 'big.json')]
    run(eval_cmd(cfg, ckpt, work, '--out', outs[0]))
    run(eval_cmd(cfg, osp.join(whole, 'epoch_1.pth'), work, '--out',
                 outs[1]))
    with open(outs[0]) as f0, open(outs[1]) as f1:
        assert json.load(f0) == json.load(f1)


def test_tuned_file_needs_its_backbone(trained, tmp_path):
    _, cfg, work, tuned = trained
    outs = [str(tmp_path / 'full.json'), str(tmp_path / 'tuned.json')]
    run(eval_cmd(cfg, osp.join(work, 'epoch_1.pth'), work, '--out', outs[0]))
    run(eval_cmd(cfg, tuned, work, '--out', outs[1]))
    with open(outs[0]) as f0, open(outs[1]) as f1:
        assert json.load(f0) == json.load(f1)
    # A random backbone (no pretrained weights) is refused, naming both
    # fingerprints; the explicit option allows it with a warning.
    out = fails(eval_cmd(cfg, tuned, work, '--cfg-options',
                     'model.backbone.init_cfg=None'))
    assert 'was trained on the frozen backbone with fingerprint' in out
    assert '--allow-other-backbone' in out
    out = run(eval_cmd(cfg, tuned, work, '--allow-other-backbone',
                   '--cfg-options', 'model.backbone.init_cfg=None'))
    assert 'loading anyway (allow_other_backbone)' in out
    assert 'accuracy/top1' in out


def test_mmpretrain_inferencer_rebuilds_the_backbone(trained):
    """mmpretrain's own inferencer given a tuned-only file: the backbone is
    loaded from the config's pretrained checkpoint and verified, so the
    predictions equal tools/test.py's model; given a training checkpoint of
    another prompt length, it refuses."""
    _, cfg, work, tuned = trained
    ckpt = osp.join(work, 'epoch_1.pth')
    code = f"""
import numpy as np, torch, vpt_mm
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS
from mmpretrain import ImageClassificationInferencer
from vpt_mm.checkpoints import load_tuned
cfg = Config.fromfile({cfg!r})
inferencer = ImageClassificationInferencer(cfg, pretrained={tuned!r})
ref = MODELS.build(cfg.model)
ref.init_weights()
load_tuned(ref, {tuned!r})
ref.eval()
x = torch.rand(2, 1, 8, 8) * 255
a = inferencer.model(inferencer.model.data_preprocessor(
    dict(inputs=list(x)))['inputs'], mode='tensor')
b = ref(ref.data_preprocessor(dict(inputs=list(x)))['inputs'], mode='tensor')
assert torch.equal(a, b), (a, b)
# The training checkpoint (saved without the frozen backbone) too.
small = ImageClassificationInferencer(cfg, pretrained={ckpt!r})
c = small.model(small.model.data_preprocessor(
    dict(inputs=list(x)))['inputs'], mode='tensor')
assert torch.equal(c, b), (c, b)
cfg.model.backbone.init_cfg = None
try:
    ImageClassificationInferencer(cfg, pretrained={tuned!r})
except ValueError as err:
    assert 'fingerprint' in str(err), err
    print('refused:', err)
else:
    raise AssertionError('a random backbone was accepted')
cfg = Config.fromfile({cfg!r})
cfg.model.backbone.prompt_cfg.num_tokens = 4
try:
    ImageClassificationInferencer(cfg, pretrained={ckpt!r})
except ValueError as err:
    assert "prompt.embeddings' has shape" in str(err), err
    print('refused pth:', err)
else:
    raise AssertionError('a p=8 checkpoint was loaded into p=4')
"""
    out = run([sys.executable, '-c', code])
    assert 'refused:' in out and 'refused pth:' in out


def flip_byte(src, dst, offset_from_end):
    data = bytearray(open(src, 'rb').read())
    data[len(data) - offset_from_end] ^= 0x10
    open(dst, 'wb').write(bytes(data))


def test_corrupted_files_are_refused(trained, tmp_path):
    _, cfg, work, tuned = trained
    bad = str(tmp_path / 'bad.safetensors')
    flip_byte(tuned, bad, 100)  # inside the tensor bytes
    out = fails(eval_cmd(cfg, bad, work))
    assert 'is corrupted: its tensors hash to sha256' in out
    # A .pth: flip a byte of a prompt value. Tensors are stored uncompressed
    # in the zip, so find the prompt's bytes and change one.
    ckpt = torch.load(osp.join(work, 'epoch_1.pth'))
    needle = ckpt['state_dict']['backbone.prompt.embeddings'].numpy(
    ).tobytes()[:64]
    data = bytearray(open(osp.join(work, 'epoch_1.pth'), 'rb').read())
    pos = bytes(data).find(needle)
    assert pos > 0
    data[pos + 10] ^= 0x10
    bad_pth = str(tmp_path / 'bad.pth')
    open(bad_pth, 'wb').write(bytes(data))
    out = fails(eval_cmd(cfg, bad_pth, work))
    assert 'is corrupted: its contents hash to sha256' in out


def test_divergence_stops_the_run(tmp_path):
    cfg = write_config(tmp_path, epochs=2)
    work = str(tmp_path / 'work')
    out = fails([sys.executable, 'tools/train.py', cfg, '--work-dir', work,
                 '--test', '--cfg-options', 'optim_wrapper.optimizer.lr=1e12'])
    assert 'Training diverged: non-finite loss' in out
    assert 'at iteration' in out and 'lr [' in out
    with open(osp.join(work, 'diverged.json')) as f:
        info = json.load(f)
    assert info['iter'] >= 1 and info['lr'][0] > 1e9
    assert not osp.exists(osp.join(work, 'test_metrics.json'))
    assert not [f for f in os.listdir(work) if f.endswith('.pth')]
    # Switched off, the same run goes to the end.
    run([sys.executable, 'tools/train.py', cfg, '--work-dir',
         str(tmp_path / 'off'), '--cfg-options',
         'optim_wrapper.optimizer.lr=1e12', 'default_hooks.finite_loss=None',
         'train_cfg.max_epochs=1'])


def with_kill_hook(cfg, tmp_path, **kwargs):
    """``cfg`` plus a :class:`KillHook` with ``kwargs``."""
    args = ', '.join(f'{k}={v!r}' for k, v in kwargs.items())
    path = tmp_path / 'killed_cfg.py'
    path.write_text(f'_base_ = [{cfg!r}]\n{KILL_IMPORTS}'
                    f"custom_hooks = [dict(type='KillHook', {args})]\n")
    return str(path)


def test_resume_after_sigkill_is_exact(tmp_path):
    """Killed mid-epoch (after iteration 52 of 3 x 21), then resumed: the
    final checkpoint equals the uninterrupted run's, bit for bit, with
    prompt dropout 0.1 and validation after every epoch."""
    cfg = write_config(tmp_path, epochs=3)
    train(cfg, str(tmp_path / 'straight'))
    killed = str(tmp_path / 'killed')
    fails([sys.executable, 'tools/train.py',
           with_kill_hook(cfg, tmp_path, at_iter=52), '--work-dir', killed])
    assert osp.exists(osp.join(killed, 'epoch_2.pth'))
    assert not osp.exists(osp.join(killed, 'epoch_3.pth'))
    log = train(cfg, killed, '--resume')
    assert 'resumed epoch: 2' in log
    assert_same_state(final_state(osp.join(killed, 'epoch_3.pth')),
                      final_state(osp.join(tmp_path, 'straight',
                                           'epoch_3.pth')))


def test_kill_while_writing_a_checkpoint(tmp_path):
    """max_keep_ckpts=1 (the demo's): killed half-way through writing
    epoch 2's checkpoint, the run resumes from epoch 1 and ends exactly
    where the uninterrupted one does; an emptied last_checkpoint does not
    stop --resume either."""
    extra = ('default_hooks = dict(checkpoint=dict(interval=1, '
             'max_keep_ckpts=1))\n')
    cfg = write_config(tmp_path, epochs=3, extra=extra)
    train(cfg, str(tmp_path / 'straight'))
    killed = str(tmp_path / 'killed')
    fails([sys.executable, 'tools/train.py',
           with_kill_hook(cfg, tmp_path, in_save_of_epoch=2), '--work-dir',
           killed])
    files = sorted(os.listdir(killed))
    assert 'epoch_1.pth' in files and 'epoch_2.pth' not in files, files
    with open(osp.join(killed, 'last_checkpoint')) as f:
        assert f.read().endswith('epoch_1.pth')
    open(osp.join(killed, 'last_checkpoint'), 'w').close()  # emptied
    log = train(cfg, killed, '--resume')
    assert 'resumed epoch: 1' in log
    assert sorted(f for f in os.listdir(killed) if f.endswith('.pth')) == [
        'epoch_3.pth'
    ]
    assert_same_state(final_state(osp.join(killed, 'epoch_3.pth')),
                      final_state(osp.join(tmp_path, 'straight',
                                           'epoch_3.pth')))
