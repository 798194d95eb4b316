"""A mixed-task batch on one backbone equals each task's own model."""
import pytest
import torch
from mmpretrain.registry import MODELS

import vpt_mm  # noqa: F401
from vpt_mm.apis import MultiTaskClassifier, copy_frozen_backbone

ARCH = dict(embed_dims=32, num_layers=4, num_heads=4,
            feedforward_channels=64)


def task_model(prompt_cfg, num_classes, frozen_from=None, seed=0, **kw):
    torch.manual_seed(seed)
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='PromptedViT', arch=ARCH, img_size=32,
                      patch_size=8, prompt_cfg=prompt_cfg, **kw),
        head=dict(type='LinearClsHead', num_classes=num_classes,
                  in_channels=32, loss=dict(type='CrossEntropyLoss'))))
    if frozen_from is not None:  # the same frozen backbone
        copy_frozen_backbone(frozen_from, model)
    return model.eval()


TASKS = {
    'deep4': (dict(num_tokens=4, deep=True), 3),
    'shallow2': (dict(num_tokens=2, deep=False), 5),
    'range7': (dict(num_tokens=7, layers=(2, 3)), 2),
    'deep1': (dict(num_tokens=1, deep=True), 4),
}


@pytest.fixture(scope='module')
def models():
    out = {}
    base = None
    for seed, (name, (cfg, classes)) in enumerate(TASKS.items()):
        out[name] = task_model(cfg, classes, base, seed=seed)
        base = base or out[name]
    return out


def single(model, x):
    with torch.no_grad():
        return model(x, mode='tensor').softmax(-1)


@pytest.mark.parametrize('fuse', [True, False])
def test_mixed_batch_equals_each_task_model(models, fuse):
    for model in models.values():
        model.backbone.fuse(fuse)
    server = MultiTaskClassifier(dict(models))
    torch.manual_seed(1)
    x = torch.randn(10, 3, 32, 32)
    tasks = [0, 1, 2, 3, 0, 2, 1, 1, 3, 0]
    scores = server(x, tasks)
    names = list(models)
    for j, t in enumerate(tasks):
        expected = single(models[names[t]], x[j:j + 1])[0]
        assert scores[j].shape == expected.shape
        torch.testing.assert_close(scores[j], expected, atol=1e-5,
                                   rtol=1e-5)
    # A sample alone gives what it gave in the mixed batch.
    torch.testing.assert_close(server(x[2:3], [2])[0], scores[2],
                               atol=1e-5, rtol=1e-5)


def test_tasks_that_change_the_backbone_are_refused(models):
    base = models['deep4']
    bias = task_model(dict(num_tokens=2, deep=True), 3, base,
                      trainable=[r'(^|\.)bias$'])
    with pytest.raises(ValueError, match='tunes backbone tensors'):
        MultiTaskClassifier(dict(deep4=base, bias=bias))
    other = task_model(dict(num_tokens=2, deep=True), 3, seed=9)
    with pytest.raises(ValueError, match='another frozen backbone'):
        MultiTaskClassifier(dict(deep4=base, other=other))
    server = MultiTaskClassifier(dict(deep4=base))
    with pytest.raises(ValueError, match='task indices must be in 0..0'):
        server(torch.randn(1, 3, 32, 32), [1])


def test_deep_tasks_run_fused(models, monkeypatch):
    """A batch of VPT-Deep tasks only: every layer in the fused form."""
    from vpt_mm.backbones import vit
    calls = []
    real = vit.fused_layer_forward
    monkeypatch.setattr(vit, 'fused_layer_forward',
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    server = MultiTaskClassifier(dict(deep4=models['deep4'],
                                      deep1=models['deep1']))
    x = torch.randn(4, 3, 32, 32)
    scores = server(x, [0, 1, 1, 0])
    assert len(calls) == 4  # every layer
    for j, name in enumerate(['deep4', 'deep1', 'deep1', 'deep4']):
        torch.testing.assert_close(scores[j],
                                   single(models[name], x[j:j + 1])[0],
                                   atol=1e-5, rtol=1e-5)


def convnet_task(p, classes, seed, frozen_from=None):
    torch.manual_seed(seed)
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='PromptedResNet', depth=18, img_size=32,
                      prompt_cfg=dict(num_tokens=p)),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=classes,
                  in_channels=512, loss=dict(type='CrossEntropyLoss'))))
    if frozen_from is not None:
        copy_frozen_backbone(frozen_from, model)
    with torch.no_grad():  # trained-looking frames
        for param in model.backbone.prompt.parameters():
            param.normal_()
    return model.eval()


def test_convnet_tasks_in_one_batch():
    """Pixel-frame tasks of one ResNet: each sample framed by its own task;
    frames of one width share a pass (the frame widens the input)."""
    a = convnet_task(2, 3, 0)
    b = convnet_task(2, 4, 1, a)
    c = convnet_task(4, 2, 2, a)
    server = MultiTaskClassifier(dict(a=a, b=b, c=c))
    x = torch.randn(6, 3, 32, 32)
    tasks = [0, 1, 2, 2, 1, 0]
    scores = server(x, tasks)
    for j, t in enumerate(tasks):
        model = (a, b, c)[t]
        torch.testing.assert_close(scores[j], single(model, x[j:j + 1])[0],
                                   atol=1e-5, rtol=1e-5)


SWIN = dict(embed_dims=16, depths=[2, 2], num_heads=[2, 4])


def swin_task(prompt_cfg, classes, seed, frozen_from=None, **kw):
    torch.manual_seed(seed)
    out_type = kw.pop('out_type', 'avg_all')
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='PromptedSwin', arch=SWIN, img_size=56,
                      window_size=7, out_indices=kw.pop('out_indices', (1, )),
                      out_type=out_type,
                      prompt_cfg=prompt_cfg, **kw),
        neck=None if out_type == 'avg_all' else dict(
            type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=classes,
                  in_channels=32, loss=dict(type='CrossEntropyLoss'))))
    if frozen_from is not None:
        copy_frozen_backbone(frozen_from, model)
    return model.eval()


@pytest.mark.parametrize('out_type, merging', [('avg_all', 'carry'),
                                               ('featmap', 'carry'),
                                               ('avg_all', 'drop')])
def test_swin_tasks_in_one_batch(out_type, merging):
    """Swin prompts of several lengths and depths in one batch: each
    sample's prompts join its own windows, the padding is masked."""
    kw = dict(out_type=out_type, prompt_merging=merging)
    a = swin_task(dict(num_tokens=3, deep=True), 3, 0, **kw)
    b = swin_task(dict(num_tokens=5, deep=False), 4, 1, a, **kw)
    c = swin_task(dict(num_tokens=2, layers=(2, 3)), 2, 2, a, **kw)
    server = MultiTaskClassifier(dict(a=a, b=b, c=c))
    x = torch.randn(5, 3, 56, 56)
    tasks = [0, 1, 2, 1, 0]
    scores = server(x, tasks)
    for j, t in enumerate(tasks):
        torch.testing.assert_close(scores[j],
                                   single((a, b, c)[t], x[j:j + 1])[0],
                                   atol=1e-5, rtol=1e-5)


def test_swin_tasks_with_other_merging_or_pooling_are_refused():
    a = swin_task(dict(num_tokens=3, deep=True), 3, 0)
    drop = swin_task(dict(num_tokens=3, deep=True), 3, 1, a,
                     prompt_merging='drop')
    with pytest.raises(ValueError, match="prompt_merging='drop'"):
        MultiTaskClassifier(dict(a=a, drop=drop))
    pooled = swin_task(dict(num_tokens=3, deep=True), 3, 1, a,
                       out_type='featmap')
    with pytest.raises(ValueError, match="out_type='featmap'"):
        MultiTaskClassifier(dict(a=a, pooled=pooled))


@pytest.mark.parametrize('out_type, fused_blocks', [('avg_all', 3),
                                                    ('featmap', 4)])
def test_swin_deep_tasks_run_fused(out_type, fused_blocks, monkeypatch):
    """VPT-Deep Swin tasks of two lengths: every block whose prompt outputs
    no task reads runs fused, with per-sample prompt K/V and the shorter
    set's padding masked; the last block under avg_all (its prompts are
    pooled) runs in the token form."""
    from vpt_mm.backbones import swin
    calls = []
    real = swin.fused_swin_block
    monkeypatch.setattr(swin, 'fused_swin_block',
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    a = swin_task(dict(num_tokens=3, deep=True), 3, 0, out_type=out_type)
    b = swin_task(dict(num_tokens=5, deep=True), 4, 1, a, out_type=out_type)
    server = MultiTaskClassifier(dict(a=a, b=b))
    x = torch.randn(4, 3, 56, 56)
    tasks = [1, 0, 0, 1]
    scores = server(x, tasks)
    assert len(calls) == fused_blocks
    for j, t in enumerate(tasks):
        torch.testing.assert_close(scores[j],
                                   single((a, b)[t], x[j:j + 1])[0],
                                   atol=1e-5, rtol=1e-5)
    calls.clear()
    alone = server(x[1:3], [0, 0])  # one task: no padding, no mask
    assert len(calls) == fused_blocks
    torch.testing.assert_close(alone[0], scores[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('backbone', [
    dict(type='PromptedViT', arch=ARCH, img_size=32, patch_size=8),
    dict(type='PromptedSwin', img_size=32, window_size=4, out_indices=(1, ),
         arch=dict(embed_dims=16, depths=[2, 2], num_heads=[2, 4]),
         out_type='avg_featmap'),
])
def test_prefix_tasks_are_refused(backbone):
    from vpt_mm.apis.multitask import sharing_problem
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(backbone, prompt_cfg=dict(num_tokens=2, deep=True,
                                                location='prefix')),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=32,
                  loss=dict(type='CrossEntropyLoss'))))
    assert "prompt location 'prefix'" in sharing_problem(model)


def test_tasks_whose_readout_a_batch_cannot_honour_are_refused(models):
    """A ViT task reading an earlier layer's [CLS] (out_indices) is served
    that layer's [CLS] in a mixed batch, not the last layer's; a readout
    option that differs from the first task's (out_indices, final_norm) is
    refused: one forward runs one of them."""
    from vpt_mm.apis import sharing_problem
    base = models['deep4']
    early = task_model(dict(num_tokens=2, deep=True), 3, base,
                       out_indices=(2, ))
    early_b = task_model(dict(num_tokens=5, deep=False), 4, base, seed=3,
                         out_indices=(2, ))
    assert sharing_problem(early) is None
    server = MultiTaskClassifier(dict(early=early, early_b=early_b))
    x = torch.randn(3, 3, 32, 32)
    scores = server(x, [0, 1, 0])
    for j, model in enumerate((early, early_b, early)):
        torch.testing.assert_close(scores[j], single(model, x[j:j + 1])[0],
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r'out_indices=\[2\]'):
        MultiTaskClassifier(dict(early=early, deep4=base))
    plain = task_model(dict(num_tokens=2, deep=True), 3, base,
                       final_norm=False)
    with pytest.raises(ValueError, match='final_norm=False'):
        MultiTaskClassifier(dict(deep4=base, plain=plain))
    raw = task_model(dict(num_tokens=2, deep=True), 3, base, out_type='raw')
    assert "out_type 'raw'" in sharing_problem(raw)


def backbone_outputs_match(server, models, x, tasks):
    """Every ``out_indices`` output of a mixed batch equals each sample's
    own model's, 1e-5."""
    feats = server.extract_feat(x, torch.tensor(tasks))
    for j, t in enumerate(tasks):
        with torch.no_grad():
            own = models[t].backbone(x[j:j + 1])
        assert len(own) == len(feats)
        for mixed, expected in zip(feats, own):
            torch.testing.assert_close(mixed[j:j + 1], expected, atol=1e-5,
                                       rtol=1e-5)


VIT_TASKS = [dict(num_tokens=4, deep=True), dict(num_tokens=2, deep=False),
             dict(num_tokens=7, layers=(2, 3)), dict(num_tokens=1,
                                                     layers=(1, 4))]


@pytest.mark.parametrize('fuse', [True, False])
@pytest.mark.parametrize('options', [
    dict(out_type='cls_token', out_indices=(1, 3)),
    dict(out_type='featmap', out_indices=(2, 3)),
    dict(out_type='avg_featmap'),
    dict(out_type='avg_prompt', out_indices=(2, 3)),
    dict(out_type='avg_all'),
    dict(out_type='avg_all', final_norm=False),
    dict(out_type='cls_token', pre_norm=True),
    dict(out_type='avg_featmap', with_cls_token=False),
])
def test_vit_mixed_batch_honours_every_readout(options, fuse):
    """Each ViT readout option, in a batch of tasks with prompt sets of
    four lengths and layer ranges: the backbone's outputs for each sample
    equal its own model's."""
    tasks = VIT_TASKS
    if options.get('out_type') == 'avg_prompt':
        tasks = [t for t in VIT_TASKS if t.get('layers', (1, ))[0] == 1]
    base = None
    models = []
    for seed, cfg in enumerate(tasks):
        model = task_model(cfg, 3, base, seed=seed, fuse_prompts=fuse,
                           **options)
        base = base or model
        models.append(model)
    server = MultiTaskClassifier({str(i): m for i, m in enumerate(models)})
    torch.manual_seed(2)
    x = torch.randn(7, 3, 32, 32)
    order = [i % len(models) for i in (0, 1, 2, 3, 2, 1, 0)]
    backbone_outputs_match(server, models, x, order)


@pytest.mark.parametrize('options', [
    dict(out_type='featmap', out_indices=(0, 1)),
    dict(out_type='featmap', out_indices=(0, 1), prompt_merging='drop'),
    dict(out_type='avg_featmap'),
    dict(out_type='avg_all', prompt_merging='drop'),
    dict(out_type='featmap', out_indices=(0, 1), out_after_downsample=True),
])
def test_swin_mixed_batch_honours_every_readout(options):
    kw = dict(options)
    a = swin_task(dict(num_tokens=3, deep=True), 3, 0, **kw)
    b = swin_task(dict(num_tokens=5, deep=False), 4, 1, a, **kw)
    c = swin_task(dict(num_tokens=2, layers=(2, 3)), 2, 2, a, **kw)
    server = MultiTaskClassifier(dict(a=a, b=b, c=c))
    x = torch.randn(5, 3, 56, 56)
    backbone_outputs_match(server, (a, b, c), x, [0, 1, 2, 1, 0])
