"""The CUDA tier: what only a GPU can show (``-m cuda``; skipped with the
reason where CUDA is absent, so CI stays on the CPU).

``tools/gpu_check.sh`` runs this tier on a lent GPU.
``VPT_MM_CUDA_TIER_ON_CPU=1`` runs it on the CPU instead (nccl becomes
gloo, ``--devices 0`` becomes ``--jobs 1``, fp16 autocast is CPU's), to
check the tests themselves on a machine without a GPU; only a GPU run says
anything about CUDA.

Bounds stated here: fused == token form to 1e-4 in float32 (relative, and
absolute at the output's scale); under autocast, fused and token forms
each stay within 2e-2 (fp16) and 6e-2 (bf16) of the float32 output, as a
fraction of its largest magnitude, and within that of each other.
"""
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import tiny_vit, token_and_fused
from tests.test_backbones.test_prompted_convnets import convnext, resnet
from tests.test_backbones.test_prompted_swin import tiny_swin
from tests.test_tools.test_benchmarks import bench  # noqa: F401
from tests.test_tools.test_train import REPO, run, write_config

pytestmark = [pytest.mark.cuda, pytest.mark.slow]
ON_GPU = torch.cuda.is_available()
DEVICE = 'cuda' if ON_GPU else 'cpu'
#: Largest autocast error, as a fraction of the float32 output's magnitude.
AUTOCAST_BOUND = {torch.float16: 2e-2, torch.bfloat16: 6e-2}
DTYPES = [torch.float16, torch.bfloat16]


def _pair(build, prompt_cfg, **kwargs):
    """The same random model in token and fused form, on DEVICE."""
    token, fused = token_and_fused(build, prompt_cfg, **kwargs)
    return token.to(DEVICE), fused.to(DEVICE)


def tiny_timm(model_name):
    """A tiny random timm model of ``model_name``'s family, 32x32 inputs."""
    from vpt_mm.backbones import PromptedTimmViT
    return lambda cfg, **kw: PromptedTimmViT(
        model_name, img_size=32, out_type='avg_all', prompt_cfg=cfg,
        timm_kwargs=dict(depth=3, embed_dim=64, num_heads=2, patch_size=8),
        **kw)


BACKBONES = {
    'vit': lambda cfg, **kw: tiny_vit(cfg, out_type='avg_all', **kw),
    'timm-dinov2': tiny_timm('vit_base_patch14_reg4_dinov2'),
    'timm-eva02': tiny_timm('eva02_base_patch14_224'),
    'swin': lambda cfg, **kw: tiny_swin(cfg, out_type='avg_all',
                                        out_indices=(1, ), **kw),
}


def _forward_backward(model, x, dtype=None):
    model.zero_grad()
    with torch.autocast(DEVICE, dtype=dtype or torch.float32,
                        enabled=dtype is not None):
        out = model(x)[-1]
    weights = torch.linspace(-1, 1, out.shape[-1], device=DEVICE)
    (out.float() * weights).sum().backward()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters()
             if p.grad is not None}
    return out.detach().float(), grads


def _scaled_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize('name', list(BACKBONES))
def test_fused_equals_token_form_in_float32(name):
    token, fused = _pair(BACKBONES[name], dict(num_tokens=3, deep=True,
                                               dropout=0.0))
    x = torch.randn(4, 3, 32, 32, device=DEVICE)
    token.eval(), fused.eval()
    out_t, grads_t = _forward_backward(token, x)
    out_f, grads_f = _forward_backward(fused, x)
    torch.testing.assert_close(out_f, out_t, rtol=1e-4, atol=1e-4)
    assert grads_t.keys() == grads_f.keys() and grads_t
    for key in grads_t:
        assert _scaled_error(grads_f[key], grads_t[key]) < 1e-4, key


@pytest.mark.parametrize('dtype', DTYPES, ids=['fp16', 'bf16'])
@pytest.mark.parametrize('name', list(BACKBONES))
def test_fused_and_token_forms_under_autocast(name, dtype):
    token, fused = _pair(BACKBONES[name], dict(num_tokens=3, deep=True,
                                               dropout=0.0))
    token.eval(), fused.eval()
    x = torch.randn(4, 3, 32, 32, device=DEVICE)
    ref, ref_grads = _forward_backward(token, x)
    bound = AUTOCAST_BOUND[dtype]
    outs = []
    for model in (token, fused):
        out, grads = _forward_backward(model, x, dtype)
        assert torch.isfinite(out).all()
        assert _scaled_error(out, ref) < bound
        for key, grad in grads.items():
            assert _scaled_error(grad, ref_grads[key]) < 4 * bound, key
        outs.append(out)
    assert _scaled_error(outs[1], outs[0]) < bound


@pytest.mark.parametrize('dtype', DTYPES, ids=['fp16', 'bf16'])
@pytest.mark.parametrize('build', [resnet, convnext], ids=['resnet',
                                                           'convnext'])
def test_convnets_under_autocast(build, dtype):
    torch.manual_seed(0)
    model = build(dict(num_tokens=2, dropout=0.0)).to(DEVICE).eval()
    x = torch.randn(2, 3, 32, 32, device=DEVICE)
    ref, _ = _forward_backward(model, x)
    out, grads = _forward_backward(model, x, dtype)
    assert _scaled_error(out, ref) < AUTOCAST_BOUND[dtype]
    assert grads and all(torch.isfinite(g).all() for g in grads.values())


def test_eval_forward_follows_an_in_place_weight_write():
    """Prompt keys/values are computed in every forward (no cache), on
    CUDA too: an in-place write to a frozen qkv weight changes the fused
    eval output exactly as it changes the token form's."""
    token, fused = _pair(BACKBONES['vit'], dict(num_tokens=3, deep=True,
                                                dropout=0.0))
    token.eval(), fused.eval()
    x = torch.randn(2, 3, 32, 32, device=DEVICE)
    with torch.no_grad():
        before = fused(x)[-1].clone()
        for model in (token, fused):
            model.layers[1].attn.qkv.weight.mul_(1.5)
        after_t, after_f = token(x)[-1], fused(x)[-1]
    assert not torch.allclose(after_f, before)
    torch.testing.assert_close(after_f, after_t, rtol=1e-4, atol=1e-4)


def _amp_wrapper(model, dtype: str):
    """The optimizer wrapper ``tools/train.py --amp --amp-dtype`` builds."""
    from mmengine.config import Config
    from mmengine.registry import OPTIM_WRAPPERS

    from vpt_mm.amp import enable_amp
    cfg = Config(dict(optim_wrapper=dict(
        optimizer=dict(type='SGD', lr=0.1, momentum=0.9))))
    enable_amp(cfg, dtype if ON_GPU else 'bfloat16')
    wrapper = cfg.optim_wrapper.to_dict()
    params = [p for p in model.parameters() if p.requires_grad]
    wrapper['optimizer'] = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    return OPTIM_WRAPPERS.build(wrapper)


CLASSIFIERS = {
    'vit': dict(type='PromptedViT', arch=dict(embed_dims=32, num_layers=2,
                                              num_heads=2,
                                              feedforward_channels=64),
                img_size=32, patch_size=8, out_type='cls_token'),
    'swin': dict(type='PromptedSwin', arch=dict(embed_dims=16, depths=[2, 2],
                                                num_heads=[2, 4]),
                 img_size=32, window_size=4, out_indices=(1, )),
    'resnet': dict(type='PromptedResNet', depth=18, img_size=32),
    'convnext': dict(type='PromptedConvNeXt', arch='atto', img_size=32),
}
WIDTH = dict(vit=32, swin=32, resnet=512, convnext=320)


def _train_steps(model, data, wrapper, steps=8):
    from vpt_mm.checkpoints import frozen_fingerprint
    frozen = frozen_fingerprint(model)
    prompts = {n: p.detach().clone() for n, p in model.named_parameters()
               if 'prompt' in n}
    assert prompts
    for _ in range(steps):
        losses = model.train_step(data, wrapper)
        assert all(torch.isfinite(v) for v in losses.values()), losses
    assert frozen_fingerprint(model) == frozen
    # Some prompts move (a ConvNet's bottom/right frame gets ~1e-12 of the
    # gradient at random init: its last rows fall off a stride-2 stage);
    # fp16's dynamic loss scale may skip the first steps (overflow at
    # 2**16), hence several.
    params = dict(model.named_parameters())
    assert any(not torch.equal(params[name], before)
               for name, before in prompts.items())


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
@pytest.mark.parametrize('name', list(CLASSIFIERS))
def test_amp_training_step(name, dtype):
    """``--amp`` (mmengine's AmpOptimWrapper: fp16 with a dynamic loss
    scale, or bf16) trains the prompts of every backbone, the frozen part
    untouched."""
    from mmengine.registry import MODELS
    from mmpretrain.structures import DataSample
    backbone = dict(CLASSIFIERS[name], prompt_cfg=dict(num_tokens=2))
    model = MODELS.build(dict(
        type='ImageClassifier', backbone=backbone,
        neck=(dict(type='GlobalAveragePooling') if name in ('swin', 'resnet')
              else None),
        head=dict(type='LinearClsHead', num_classes=3,
                  in_channels=WIDTH[name]),
        data_preprocessor=dict(type='ClsDataPreprocessor', mean=[0] * 3,
                               std=[1] * 3))).to(DEVICE)
    model.init_weights()
    data = dict(inputs=[torch.rand(3, 32, 32) * 255 for _ in range(4)],
                data_samples=[DataSample().set_gt_label(i % 3)
                              for i in range(4)])
    _train_steps(model, data, _amp_wrapper(model, dtype))


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_amp_training_step_setr(tmp_path, dtype):
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from tests.seg_configs import write_seg_config
    from vpt_mm.config import config_from_file
    path = write_seg_config(str(tmp_path / 'seg.py'), 'vpt_deep',
                            str(tmp_path / 'absent.pth'), str(tmp_path))
    cfg = config_from_file(path).model.to_dict()
    cfg['backbone'].pop('init_cfg')
    init_default_scope('mmseg')
    model = revert_sync_batchnorm(MODELS.build(cfg)).to(DEVICE)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(
            img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, 150, (1, 64, 64)))
        samples.append(sample)
    data = dict(inputs=[torch.rand(3, 64, 64) * 255 for _ in range(2)],
                data_samples=samples)
    _train_steps(model, data, _amp_wrapper(model, dtype))


# -- tools on the GPU (test_tool_*: real processes; tools/gpu_check.sh runs
# them after the measurements) ----------------------------------------------


def test_tool_dist_train_one_process_vtab(bench, tmp_path):  # noqa: F811
    """``dist_train.sh CONFIG 1``: torchrun, nccl on a GPU."""
    _, configs = bench
    work = str(tmp_path / 'work')
    log = run(['bash', 'tools/dist_train.sh', configs['vtab'], '1',
               '--task', 'dmlab', '--work-dir', work], timeout=600)
    assert 'Distributed training: True' in log
    assert ("'backend': 'nccl'" in log) == ON_GPU
    assert 'accuracy/top1' in log and osp.exists(osp.join(work,
                                                          'epoch_2.pth'))


def test_tool_dist_train_one_process_setr(tmp_path):
    """SETR-PUP through ``dist_train.sh CONFIG 1``: ViT-B on 64x64 crops
    (the tiny ViT without a GPU), a few iterations, SyncBN kept on CUDA."""
    from tests.seg_configs import ARCH, write_pretrained, write_seg_config
    from vpt_mm.datasets.synthetic import make_ade20k_layout
    arch = (dict(embed_dims=768, num_layers=12, num_heads=12,
                 feedforward_channels=3072) if ON_GPU else ARCH)
    data_root = make_ade20k_layout(str(tmp_path / 'ade'))
    ckpt = write_pretrained(str(tmp_path / 'vit.pth'), arch)
    cfg = write_seg_config(str(tmp_path / 'seg.py'), 'vpt_deep', ckpt,
                           data_root, arch=arch)
    work = str(tmp_path / 'work')
    log = run(['bash', 'tools/dist_train.sh', cfg, '1', '--work-dir', work],
              timeout=600)
    assert 'mIoU' in log and osp.exists(osp.join(work, 'iter_4.pth'))
    assert ('SyncBN needs CUDA' in log) != ON_GPU


def test_tool_resume_after_sigkill_is_exact_deterministic(tmp_path):
    """Killed mid-epoch, then resumed, with ``--deterministic``: the final
    checkpoint equals the uninterrupted run's bit for bit, on the GPU."""
    from tests.test_tools.test_trust import (
        assert_same_state,
        fails,
        final_state,
        train,
        with_kill_hook,
    )
    cfg = write_config(tmp_path, epochs=3)
    train(cfg, str(tmp_path / 'straight'), '--deterministic')
    killed = str(tmp_path / 'killed')
    fails([sys.executable, 'tools/train.py',
           with_kill_hook(cfg, tmp_path, at_iter=52), '--work-dir', killed,
           '--deterministic'])
    log = train(cfg, killed, '--resume', '--deterministic')
    assert 'resumed epoch: 2' in log
    assert_same_state(final_state(osp.join(killed, 'epoch_3.pth')),
                      final_state(osp.join(tmp_path, 'straight',
                                           'epoch_3.pth')))


def test_tool_infer_on_the_device_equals_the_cpu(bench, tmp_path):  # noqa: F811
    """``tools/infer.py --device cuda`` (a mixed-task batch: two tasks of
    different prompt lengths) gives the CPU's scores to 1e-4."""
    from tests.test_tools.test_infer import tuned
    root, configs = bench
    a = tuned(configs['vtab'], str(tmp_path / 'a.safetensors'), 0, 4)
    b = tuned(configs['vtab'], str(tmp_path / 'b.safetensors'), 1, 2)
    images = str(root / 'vtab' / 'dmlab' / 'images' / 'test')
    preds = {}
    for device in ('cpu', DEVICE):
        out = str(tmp_path / f'{device}.json')
        run([sys.executable, 'tools/infer.py', configs['vtab'], images,
             '--task', f'dmlab={a}', '--task', f'b={b}', '--out', out,
             '--batch-size', '4', '--device', device])
        preds[device] = json.load(open(out))
    for image, row in preds['cpu'].items():
        for task, pred in row.items():
            other = preds[DEVICE][image][task]
            assert other['pred_label'] == pred['pred_label']
            torch.testing.assert_close(
                torch.tensor(other['pred_scores']),
                torch.tensor(pred['pred_scores']), rtol=1e-4, atol=1e-4)


def test_tool_analysis_on_the_device(bench, tmp_path):  # noqa: F811
    """tsne.py and class_prototypes.py with ``--device``."""
    from tests.test_tools.test_infer import tuned
    root, configs = bench
    a = tuned(configs['vtab'], str(tmp_path / 'a.safetensors'), 0, 4)
    out = str(tmp_path / 'tsne.png')
    run([sys.executable, 'tools/analysis_tools/tsne.py', configs['vtab'], a,
         '--task', 'dmlab', '--out', out, '--device', DEVICE])
    assert osp.getsize(out) > 1000
    protos = str(tmp_path / 'protos.pt')
    run([sys.executable, 'tools/analysis_tools/class_prototypes.py',
         configs['vtab'], protos, '--task', 'dmlab', '--device', DEVICE])
    assert torch.load(protos).shape == (6, 32)


def test_tool_benchmark_cost_on_the_device(tmp_path):
    from tests.test_tools.test_benchmark_cost import write_tiny_vit_config
    cfg = write_tiny_vit_config(tmp_path)
    for amp in ([], ['--amp', 'bf16']):
        out = tmp_path / f'cost{len(amp)}'
        log = run([sys.executable, 'tools/analysis_tools/benchmark_cost.py',
                   cfg, '--num-tokens', '2', '--methods', 'full',
                   'deep', '--batch-size', '2', '--img-size', '32',
                   '--repeats', '2', '--device', DEVICE, '--out-dir',
                   str(out), *amp])
        assert '| VPT-Deep | 2 | fused |' in log
        report = json.loads((out / 'cost.json').read_text())
        assert report['amp'] == ('bf16' if amp else 'fp32')
        assert ('max_memory_allocated' in log) == ON_GPU
        for row in report['rows']:
            assert row['train']['ms_per_img'] > 0
            assert row['train']['peak_mb'] > row['train']['base_mb'] > 0


def test_tool_sweep_killed_and_restarted(bench):  # noqa: F811
    """A sweep on ``--devices 0`` killed with SIGKILL while its first jobs
    run, then started again: it finishes, with every grid point scored
    once."""
    root, configs = bench
    sweep_dir = str(root / 'sweep_gpu')
    where = ['--devices', '0'] if ON_GPU else ['--jobs', '1']
    cmd = [sys.executable, 'tools/sweep.py', configs['vtab'], '--tasks',
           'dmlab', '--lrs', '1', '0.5', '--wds', '0', '--seeds', '1',
           '--work-dir', sweep_dir, '--method', 'VPT-Deep', '--backbone',
           'tiny', *where]
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        for line in proc.stdout:  # kill once the second job has started
            if line.startswith('[sweep] run ') and 'lr0.5' in line:
                time.sleep(3)
                break
            assert time.monotonic() < deadline, 'the sweep never started'
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended by itself (and said why)
            pass
        proc.wait(timeout=60)
    assert not osp.exists(osp.join(sweep_dir, 'records.json'))
    log = run(cmd, timeout=600)
    assert '[sweep] run ' in log
    best = json.load(open(osp.join(sweep_dir, 'dmlab', 'best.json')))
    assert sorted(s['lr'] for s in best['scores']) == [0.5, 1.0]
    records = json.load(open(osp.join(sweep_dir, 'records.json')))
    assert [(r['task'], r['seed']) for r in records] == [('dmlab', 0)]
