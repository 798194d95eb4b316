"""mmseg's own UperNet recipes with PromptedSwin and PromptedConvNeXt
(configs/upernet/): the same networks as mmseg's, the pretrained files
mmseg's configs name (in their layouts) loaded strictly, and real runs on a
generated ADE20K."""
import json
import os.path as osp
import sys

import pytest
import torch

import vpt_mm  # noqa: F401
from tests.seg_configs import REPO, write_upernet_config
from vpt_mm.prompts.plan import PromptPlan

SWIN = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[2, 2, 4, 4])
SWIN_WIDTHS = (32, 64, 128, 256)
CONVNEXT = dict(depths=[1, 1, 1, 1], channels=[16, 32, 64, 128])


def mmseg_swin_file(path):
    """A random mmseg Swin (the tiny SWIN arch) saved as mmseg's pretrained
    Swin files are (``swin2mmseg.py``'s layout): stages, patch embedding
    and the classification ``norm``, no per-stage output norms; returns the
    mmseg model."""
    from mmseg.models.backbones import SwinTransformer
    torch.manual_seed(0)
    seg = SwinTransformer(pretrain_img_size=224, window_size=7,
                          out_indices=(0, 1, 2, 3), drop_path_rate=0.0,
                          **SWIN)
    state = {k: v for k, v in seg.state_dict().items()
             if not k.startswith('norm')}
    state['norm.weight'] = torch.rand(256)
    state['norm.bias'] = torch.rand(256)
    torch.save(dict(state_dict=state), path)
    return seg


def test_swin_is_mmsegs_swin_on_its_pretrained_file(tmp_path):
    """The config's PromptedSwin (a small arch) on mmseg's Swin file gives
    mmseg's own Swin's four feature maps on the same file, loaded its way
    (non-strict: the classification norm unused, fresh output norms)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    path = str(tmp_path / 'swin.pth')
    seg = mmseg_swin_file(path)
    seg.init_cfg = dict(type='Pretrained', checkpoint=path)
    with torch.no_grad():  # what mmseg's loading must overwrite or keep
        for p in seg.parameters():
            p.add_(1.0)
        for i in range(4):
            getattr(seg, f'norm{i}').reset_parameters()
    seg.init_weights()
    seg.eval()
    cfg = Config.fromfile(osp.join(REPO, 'configs/upernet/'
                                   'vpt_deep_swin-b_ade20k.py'))
    backbone = dict(cfg.model.backbone, arch=SWIN,
                    init_cfg=dict(type='Pretrained', checkpoint=path))
    init_default_scope('mmseg')
    ours = MODELS.build(backbone)
    ours.init_weights()
    ours.eval()
    x = torch.rand(1, 3, 256, 256)  # every stage larger than a window
    with torch.no_grad():
        theirs = seg(x)
        mine = ours(x, PromptPlan.empty())
    assert len(mine) == 4
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_output_norms_may_be_missing_only_whole(tmp_path):
    """A checkpoint lacking an output norm's weight but holding its bias is
    not a classification checkpoint: an error naming the key."""
    from mmpretrain.models.backbones import ConvNeXt

    from vpt_mm.backbones import PromptedConvNeXt
    from vpt_mm.checkpoints import load_pretrained_backbone
    torch.manual_seed(0)
    plain = ConvNeXt(arch=CONVNEXT, out_indices=(3, ),
                     gap_before_final_norm=False)
    path = str(tmp_path / 'cls.pth')
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in
                                plain.state_dict().items()}), path)
    model = PromptedConvNeXt(arch=CONVNEXT, img_size=64,
                             out_indices=(0, 1, 2, 3),
                             gap_before_final_norm=False)
    load_pretrained_backbone(model, path, prefix='backbone.')
    assert torch.equal(model.norm3.weight, plain.norm3.weight)
    assert torch.equal(model.norm0.weight, torch.ones(16))
    state = torch.load(path)['state_dict']
    state['backbone.norm0.bias'] = torch.zeros(16)
    torch.save(dict(state_dict=state), path)
    with pytest.raises(ValueError, match=r'norm0\.weight'):
        load_pretrained_backbone(model, path, prefix='backbone.')


@pytest.mark.slow
@pytest.mark.parametrize('config, backbone, widths', [
    ('vpt_deep_swin-b_ade20k.py', f'arch=dict(_delete_=True, **{SWIN!r}), '
     'img_size=64, window_size=2', SWIN_WIDTHS),
    ('vpt_convnext-b_ade20k.py', f'arch=dict(_delete_=True, **{CONVNEXT!r}),'
     ' img_size=64',
     tuple(CONVNEXT['channels'])),
], ids=['swin', 'convnext'])
def test_upernet_recipe_trains_tests_and_serves(tmp_path, config, backbone,
                                                widths):
    """tools/train.py and tools/test.py on the recipe (ConvNeXt's AMP in
    bfloat16 on this CPU), on a stand-in of the pretrained backbone; the
    tuned-only file scores as the checkpoint does, and init_segmentor
    gives mmseg's inference_model the same predictions from either."""
    from mmseg.apis import inference_model

    from tests.test_tools.test_train import run
    from vpt_mm.apis import init_segmentor
    from vpt_mm.datasets.synthetic import make_ade20k_layout
    data_root = make_ade20k_layout(str(tmp_path / 'ade'))
    cfg = write_upernet_config(str(tmp_path / 'cfg.py'), config, backbone,
                               widths, data_root)
    standin = str(tmp_path / 'standin.pth')
    run([sys.executable, 'tools/model_converters/standin_checkpoint.py',
         cfg, standin])
    work = str(tmp_path / 'work')
    option = ['--cfg-options', f'model.backbone.init_cfg.checkpoint={standin}']
    log = run([sys.executable, 'tools/train.py', cfg, '--work-dir', work,
               *option])
    assert 'mIoU' in log
    if 'convnext' in config:
        assert 'it is CPUAmpOptimWrapper' in log
    ckpt = osp.join(work, 'iter_4.pth')
    state = torch.load(ckpt)['state_dict']
    assert {k.split('.')[1] for k in state if k.startswith('backbone.')} \
        == {'prompt'}
    tuned = str(tmp_path / 'tuned.safetensors')
    run([sys.executable, 'tools/model_converters/extract_tuned.py', cfg,
         ckpt, tuned, *option])
    outs = [str(tmp_path / 'a.json'), str(tmp_path / 'b.json')]
    for path, out in zip((ckpt, tuned), outs):
        run([sys.executable, 'tools/test.py', cfg, path, '--out', out,
             '--work-dir', work, *option])
    with open(outs[0]) as a, open(outs[1]) as b:
        assert json.load(a) == json.load(b)
    from vpt_mm.config import resolve_config
    resolved = resolve_config(cfg, {'model.backbone.init_cfg.checkpoint':
                                    standin})
    image = str(next((tmp_path / 'ade').rglob('*.jpg')))
    preds = [inference_model(init_segmentor(resolved, path),
                             image).pred_sem_seg.data
             for path in (ckpt, tuned)]
    assert torch.equal(preds[0], preds[1])
