"""Real training runs through tools/train.py and tools/dist_train.sh."""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmpretrain.models.backbones import VisionTransformer

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(REPO, 'configs', 'demo', 'vpt-deep_vit-tiny_digits-5to9.py')

pytestmark = pytest.mark.slow
# The demo's tiny ViT (configs/demo/_base_/vit-tiny_digits.py).
DEMO_ARCH = dict(
    embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=128)


def write_config(tmp_path, epochs=2, extra=''):
    """A short VPT-Deep run of the demo on a random 'pretrained' ViT."""
    backbone = VisionTransformer(
        arch=DEMO_ARCH,
        img_size=8,
        patch_size=2,
        in_channels=1)
    ckpt = str(tmp_path / 'pretrained.pth')
    torch.save(
        dict(state_dict={
            f'backbone.{k}': v
            for k, v in backbone.state_dict().items()
        }), ckpt)
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f"""
_base_ = [{DEMO!r}]
model = dict(backbone=dict(init_cfg=dict(checkpoint={ckpt!r})))
train_cfg = dict(max_epochs={epochs}, val_interval=1)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=True,
                        begin=0, end=1, convert_to_iter_based=True)]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=3),
                     logger=dict(interval=5))
{extra}
""")
    return str(cfg)


def load_tool(path: str):
    """A script under tools/ (e.g. ``tools/gpu_check.py``) as a module, to
    test its functions in this process."""
    import importlib.util
    name = osp.splitext(osp.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(cmd, **kwargs):
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, env=env, **kwargs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_train_then_resume(tmp_path):
    work = str(tmp_path / 'work')
    cfg = write_config(tmp_path)
    log = run([sys.executable, 'tools/train.py', cfg, '--work-dir', work,
               '--deterministic'])
    assert 'accuracy/top1' in log and 'deterministic: True' in log
    assert osp.exists(osp.join(work, 'epoch_2.pth'))
    ckpt = torch.load(osp.join(work, 'epoch_2.pth'))
    prompts_2 = ckpt['state_dict']['backbone.prompt.embeddings']

    log = run([
        sys.executable, 'tools/train.py', cfg, '--work-dir', work, '--resume',
        '--cfg-options', 'train_cfg.max_epochs=3'
    ])
    assert 'resumed epoch: 2' in log
    ckpt = torch.load(osp.join(work, 'epoch_3.pth'))
    assert ckpt['meta']['epoch'] == 3
    assert not torch.equal(ckpt['state_dict']['backbone.prompt.embeddings'],
                           prompts_2)


def test_test_tool_with_tuned_only_file(tmp_path):
    work = str(tmp_path / 'work')
    cfg = write_config(tmp_path, epochs=1)
    run([sys.executable, 'tools/train.py', cfg, '--work-dir', work])
    ckpt = osp.join(work, 'epoch_1.pth')
    tuned = str(tmp_path / 'task.safetensors')
    run([
        sys.executable, 'tools/model_converters/extract_tuned.py', cfg, ckpt,
        tuned
    ])
    assert osp.getsize(tuned) < 100_000
    full = str(tmp_path / 'full.json')
    small = str(tmp_path / 'tuned.json')
    run([sys.executable, 'tools/test.py', cfg, ckpt, '--work-dir', work,
         '--out', full])
    run([sys.executable, 'tools/test.py', cfg, tuned, '--work-dir', work,
         '--out', small])
    with open(full) as f1, open(small) as f2:
        assert f1.read() == f2.read()


def test_dist_train_two_processes(tmp_path):
    work = str(tmp_path / 'work')
    cfg = write_config(
        tmp_path,
        epochs=1,
        extra="custom_imports = dict(imports=['vpt_mm', "
        "'tests.test_tools.dump_prompts_hook'], allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='DumpPromptsHook')]\n")
    env = dict(os.environ, PORT='29561')
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir', work],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'Distributed training: True' in log
    dumps = sorted(glob.glob(osp.join(work, 'prompts_rank*.pt')))
    assert len(dumps) == 2
    rank0, rank1 = (torch.load(p) for p in dumps)
    assert torch.equal(rank0, rank1)
    initial = torch.load(osp.join(work, 'epoch_1.pth'))
    assert torch.equal(initial['state_dict']['backbone.prompt.embeddings'],
                       rank0)


def test_class_prototypes_tool_feeds_cls_init(tmp_path):
    cfg = write_config(tmp_path, epochs=1)
    out = str(tmp_path / 'protos.pt')
    run([sys.executable, 'tools/analysis_tools/class_prototypes.py', cfg,
         out])
    protos = torch.load(out)
    assert protos.shape == (5, 64)
    from vpt_mm.backbones import PromptedViT
    model = PromptedViT(
        arch=DEMO_ARCH,
        img_size=8,
        patch_size=2,
        in_channels=1,
        prompt_cfg=dict(num_tokens=5, init='cls', cls_init=out))
    assert torch.equal(model.prompt.embeddings[0], protos)


def test_train_with_amp_on_cpu(tmp_path):
    work = str(tmp_path / 'work')
    cfg = write_config(tmp_path, epochs=1)
    log = run([
        sys.executable, 'tools/train.py', cfg, '--work-dir', work, '--amp'
    ])
    expected = ('AmpOptimWrapper' if torch.cuda.is_available() else
                'CPUAmpOptimWrapper')
    assert f"type='{expected}'" in log
    assert 'accuracy/top1' in log
    ckpt = torch.load(osp.join(work, 'epoch_1.pth'))
    prompts = ckpt['state_dict']['backbone.prompt.embeddings']
    assert prompts.dtype == torch.float32 and torch.isfinite(prompts).all()
