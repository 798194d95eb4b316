"""tools/train.py, tools/test.py and extract_tuned.py on a timm backbone: the
demo's digits with a tiny random DINOv2 (registers, layer scale) whose
pretrained file is written in timm's own layout."""
import json
import os.path as osp
import sys

import pytest
import torch

from tests.test_tools.test_train import DEMO, run

pytestmark = pytest.mark.slow
TIMM = dict(patch_size=2, in_chans=1, depth=2, embed_dim=64, num_heads=2)


def test_timm_backbone_trains_tests_and_extracts(tmp_path):
    import timm
    from safetensors.torch import save_file

    import vpt_mm  # noqa: F401
    name = 'vit_base_patch14_reg4_dinov2'
    torch.manual_seed(0)
    source = timm.create_model(name, pretrained=False, img_size=8, **TIMM)
    pretrained = str(tmp_path / 'model.safetensors')
    save_file({k: v.contiguous() for k, v in source.state_dict().items()},
              pretrained)
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f"""
_base_ = [{DEMO!r}]
model = dict(backbone=dict(
    _delete_=True, type='PromptedTimmViT', model_name={name!r}, img_size=8,
    timm_kwargs={TIMM!r}, prompt_cfg=dict(num_tokens=4, deep=True),
    init_cfg=dict(type='Pretrained', checkpoint={pretrained!r})))
train_cfg = dict(max_epochs=1, val_interval=1)
param_scheduler = []
default_hooks = dict(checkpoint=dict(interval=1), logger=dict(interval=5))
""")
    work = str(tmp_path / 'work')
    log = run([sys.executable, 'tools/train.py', str(cfg), '--work-dir',
               work])
    assert 'accuracy/top1' in log
    ckpt = osp.join(work, 'epoch_1.pth')
    state = torch.load(ckpt)['state_dict']
    # Small checkpoint: prompts and head only.
    assert set(state) == {'backbone.prompt.embeddings', 'head.fc.weight',
                          'head.fc.bias'}
    tuned = str(tmp_path / 'task.safetensors')
    run([sys.executable, 'tools/model_converters/extract_tuned.py',
         str(cfg), ckpt, tuned])
    outs = [str(tmp_path / 'a.json'), str(tmp_path / 'b.json')]
    for path, out in zip((ckpt, tuned), outs):
        run([sys.executable, 'tools/test.py', str(cfg), path, '--work-dir',
             work, '--out', out])
    with open(outs[0]) as a, open(outs[1]) as b:
        assert json.load(a) == json.load(b)
