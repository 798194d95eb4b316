"""Tools that run a model keep every tensor on ``--device``.

The ``meta`` device stands in for "not the CPU": a tensor left on the CPU
meets the model's meta tensors and torch refuses the mix, as it refuses a
CPU tensor beside CUDA ones.
"""
import argparse

import pytest
import torch

from tests.test_tools.test_train import REPO, load_tool
from vpt_mm.config import config_from_file
from vpt_mm.devices import add_device_arg

TINY_VIT = dict(
    _delete_=True, embed_dims=32, num_layers=2, num_heads=2,
    feedforward_channels=64)


def _benchmark_cost():
    return load_tool('tools/analysis_tools/benchmark_cost.py')


def _model_cfg(config: str, **backbone) -> dict:
    cfg = config_from_file(f'{REPO}/{config}')
    model = cfg.model.to_dict()
    model['backbone'].update(backbone)
    return model


def _job(model: dict, device: str, mode: str, method: str = 'deep',
         amp=None, scope: str = 'mmpretrain', size=(32, 32)) -> dict:
    return dict(model=model, scope=scope, method=method, num_tokens=2,
                fused=False, with_cp=False, mode=mode, batch_size=2,
                img_size=list(size), repeats=1, device=device, amp=amp)


def _vit() -> dict:
    model = _model_cfg('configs/vtab/vpt_deep_vit-b.py', img_size=32,
                       patch_size=8)
    model['backbone']['arch'] = {k: v for k, v in TINY_VIT.items()
                                 if k != '_delete_'}
    model['head']['in_channels'] = 32
    return model


@pytest.mark.parametrize('mode', ['train', 'infer'])
@pytest.mark.parametrize('method', ['full', 'deep'])
def test_benchmark_cost_step_on_another_device(mode, method):
    """The labels of a training step used to be made on the CPU, beside
    logits on --device: every classification config crashed on a GPU."""
    step = _benchmark_cost().prepare(_job(_vit(), 'meta', mode, method))
    step()


def test_benchmark_cost_segmentor_step_on_another_device(tmp_path):
    from tests.seg_configs import write_seg_config
    path = write_seg_config(str(tmp_path / 'seg.py'), 'vpt_deep',
                            str(tmp_path / 'absent.pth'), str(tmp_path))
    model = config_from_file(path).model.to_dict()
    bench = _benchmark_cost()
    # mmseg's loss indexes by value (nonzero), which no meta tensor can:
    # the forward runs on meta, the label maps are made there.
    bench.prepare(_job(model, 'meta', 'infer', scope='mmseg',
                       size=(64, 64)))()
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmseg')
    segmentor = MODELS.build(model)
    samples = bench.make_samples(segmentor, 2, [64, 64], 'meta')
    assert {s.gt_sem_seg.data.device.type for s in samples} == {'meta'}


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_benchmark_cost_amp_step(amp):
    """--amp: the step runs under autocast (fp16 with a GradScaler) and
    moves the prompts."""
    bench = _benchmark_cost()
    step = bench.prepare(_job(_vit(), 'cpu', 'train', amp=amp))
    step()


def test_device_argument_names_the_problem():
    parser = argparse.ArgumentParser()
    add_device_arg(parser)
    assert parser.parse_args([]).device == (
        'cuda' if torch.cuda.is_available() else 'cpu')
    assert parser.parse_args(['--device', 'cpu']).device == 'cpu'
    with pytest.raises(SystemExit):
        parser.parse_args(['--device', 'gpu0'])
    if not torch.cuda.is_available():
        with pytest.raises(argparse.ArgumentTypeError,
                           match='CUDA is not available here'):
            from vpt_mm.devices import device_arg
            device_arg('cuda:0')


def test_benchmark_cost_reports_a_failed_measurement_and_goes_on(
        tmp_path, monkeypatch):
    """One variant fails (e.g. out of memory): the others are measured, the
    table shows "-" for it, cost.json lists it, and the tool exits with an
    error naming it."""
    import json
    import sys

    from tests.test_tools.test_benchmark_cost import write_tiny_vit_config
    bench = _benchmark_cost()

    def fake(job, in_process=False):
        if job['method'] == 'deep' and job['fused']:
            raise RuntimeError('Measurement deep p=2 train failed: OOM')
        return dict(ms_per_img=1.0, peak_mb=10.0, base_mb=5.0, saved_mb=1.0)

    monkeypatch.setattr(bench, 'run_job', fake)
    monkeypatch.setattr(sys, 'argv', [
        'benchmark_cost.py', write_tiny_vit_config(tmp_path),
        '--num-tokens', '2', '--methods', 'full', 'deep', '--modes', 'train',
        '--device', 'cpu', '--out-dir', str(tmp_path / 'out')])
    with pytest.raises(SystemExit, match=r'(?s)1 measurement\(s\) failed .*'
                       r'deep p=2 train failed: OOM'):
        bench.main()
    report = json.loads((tmp_path / 'out' / 'cost.json').read_text())
    rows = {(r['method'], r['form']): r for r in report['rows']}
    assert rows[('deep', 'fused')]['train']['ms_per_img'] is None
    assert 'OOM' in rows[('deep', 'fused')]['errors']['train']
    assert rows[('deep', 'token')]['train']['ms_per_img'] == 1.0
    assert len(report['failed']) == 1
