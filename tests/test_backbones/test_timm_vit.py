"""PromptedTimmViT on tiny random timm models of each ViT family, with
pretrained files written in timm's own layout by the tests."""
import glob
import os.path as osp

import pytest
import torch
from mmpretrain.registry import MODELS

import vpt_mm  # noqa: F401  (before timm: torchvision's ops)
from vpt_mm.backbones import PromptedTimmViT, TimmViT
from vpt_mm.prompts.plan import PromptPlan

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = dict(depth=3, embed_dim=64, num_heads=2)

#: model name -> (input size, extra timm arguments): one per family.
FAMILIES = {
    'vit_base_patch16_224': (32, {}),  # IN-21k ViT, class token
    'vit_base_patch14_reg4_dinov2': (28, {}),  # registers, layer scale
    'vit_base_patch16_clip_224': (32, {}),  # pre-norm
    'vit_base_patch16_siglip_224': (32, {}),  # no class token, MAP pool
    'deit3_base_patch16_224': (32, {}),  # positions skip the class token
    'eva02_base_patch14_224': (28, {}),  # RoPE, SwiGLU, split q/k/v bias
    'vit_base_patch16_dinov3': (32, {}),  # Eva class, RoPE, registers
}


def readout(name):
    return 'avg_featmap' if 'siglip' in name else 'cls_token'


def build(name, prompt_cfg=None, seed=0, **kwargs):
    img, extra = FAMILIES[name]
    torch.manual_seed(seed)
    kwargs.setdefault('out_type', readout(name))
    model = PromptedTimmViT(
        name, img_size=img, timm_kwargs=dict(TINY, **extra),
        prompt_cfg=dict(dict(num_tokens=3, deep=True, dropout=0.0),
                        **(prompt_cfg or {})), **kwargs)
    with torch.no_grad():  # prompts at the scale of image tokens
        model.prompt.embeddings.normal_()
    return model.eval()


def images(name, batch=2, seed=1):
    img = FAMILIES[name][0]
    torch.manual_seed(seed)
    return torch.rand(batch, 3, img, img)


def reference(model, x):
    """The token form from timm's own modules: prompts inserted after the
    prefix tokens at each prompted layer, no position for them (RoPE skips
    them as prefix tokens); the final norm's output, whole sequence."""
    timm_model = model.timm_model
    h = timm_model.patch_embed(x)
    rope = None
    if hasattr(timm_model, 'rope'):
        h, rope = timm_model._pos_embed(h)
    else:
        h = timm_model._pos_embed(h)
    h = timm_model.norm_pre(h)
    n = timm_model.num_prefix_tokens
    carried = 0
    layers = model.prompt.layer_ids
    for i, block in enumerate(timm_model.blocks):
        if i in layers:
            prompts = model.prompt.embeddings[layers.index(i)]
            h = torch.cat([h[:, :n], prompts.expand(len(x), -1, -1),
                           h[:, n + carried:]], dim=1)
            carried = prompts.shape[0]
        if rope is None:
            h = block(h)
        else:
            block.attn.num_prefix_tokens = n + carried
            try:
                h = block(h, rope=rope)
            finally:
                block.attn.num_prefix_tokens = n
    return timm_model.norm(h)


@pytest.mark.parametrize('name', list(FAMILIES))
def test_frozen_path_is_timms_forward_features(name):
    model = build(name, out_type='raw')
    x = images(name)
    with torch.no_grad():
        ours = model(x, PromptPlan.empty())[0]
        theirs = model.timm_model.forward_features(x)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('deep', [True, False])
@pytest.mark.parametrize('name', list(FAMILIES))
def test_prompts_equal_the_token_form_of_timms_blocks(name, deep):
    """Token form (whole sequence) and fused form (readout, prompt
    gradients) equal the reference built from timm's own blocks."""
    cfg = dict(deep=deep)
    x = images(name)
    token = build(name, cfg, out_type='raw', fuse_prompts=False)
    ref = reference(token, x)
    torch.testing.assert_close(token(x)[0], ref, atol=1e-5, rtol=1e-5)
    n = token.num_extra_tokens
    expected = ref[:, 0] if readout(name) == 'cls_token' else \
        ref[:, n + 3:].mean(1)
    grads = []
    for fuse in (False, True):
        model = build(name, cfg, fuse_prompts=fuse)
        assert bool(model.fused_layers) == (fuse and deep)
        out = model(x)[0]
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        out.square().sum().backward()
        grads.append(model.prompt.embeddings.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('name', ['vit_base_patch14_reg4_dinov2',
                                  'eva02_base_patch14_224'])
def test_readouts_and_non_square_feature_maps(name):
    x = torch.rand(1, 3, 28, 42)  # a 2x3 patch grid (14-pixel patches)
    model = build(name, out_type='featmap', out_indices=(1, 2))
    maps = model(x)
    assert [tuple(m.shape) for m in maps] == [(1, 64, 2, 3)] * 2
    token = build(name, out_type='raw', fuse_prompts=False)
    seq = token(x)[0]
    n = token.num_extra_tokens
    torch.testing.assert_close(
        maps[1].flatten(2).transpose(1, 2), seq[:, n + 3:],
        atol=1e-5, rtol=1e-5)
    for out_type, expected in (('avg_prompt', seq[:, n:n + 3].mean(1)),
                               ('avg_all', seq[:, n:].mean(1))):
        got = build(name, out_type=out_type)(x)[0]
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_frozen_backbone_contract():
    name = 'vit_base_patch14_reg4_dinov2'
    model = build(name)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ['prompt.embeddings']
    model.train()
    assert model.prompt.training
    assert not any(m.training for m in model.timm_model.modules())
    bias = build(name, trainable=[r'(^|\.)bias$'])
    assert all(n.endswith('bias') or n.startswith('prompt.')
               for n, p in bias.named_parameters() if p.requires_grad)


def write_timm_file(name, path, **kwargs):
    """A timm model's own state dict (with its classifier head), as the hub
    holds it; returns the model."""
    import timm
    img, extra = FAMILIES[name]
    kwargs.setdefault('img_size', img)
    torch.manual_seed(3)
    source = timm.create_model(name, pretrained=False, num_classes=7,
                               **TINY, **extra, **kwargs).eval()
    state = source.state_dict()
    if str(path).endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, str(path))
    return source


@pytest.mark.parametrize('suffix', ['safetensors', 'pth'])
@pytest.mark.parametrize('name', ['vit_base_patch14_reg4_dinov2',
                                  'eva02_base_patch14_224'])
def test_pretrained_file_in_timms_layout_loads_strictly(tmp_path, name,
                                                        suffix):
    path = tmp_path / f'model.{suffix}'
    source = write_timm_file(name, path)
    model = build(name, out_type='raw',
                  init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    x = images(name)
    with torch.no_grad():
        torch.testing.assert_close(model(x, PromptPlan.empty())[0],
                                   source.forward_features(x))
    # A key missing from the file is an error naming it.
    from safetensors.torch import load_file, save_file
    state = (load_file(str(path)) if suffix == 'safetensors' else
             torch.load(str(path)))
    del state['blocks.1.norm1.weight']
    bad = tmp_path / 'bad.safetensors'
    save_file(state, str(bad))
    with pytest.raises(ValueError, match=r'blocks\.1\.norm1\.weight'):
        build(name, init_cfg=dict(type='Pretrained',
                                  checkpoint=str(bad))).init_weights()


def test_position_embeddings_are_resampled_as_timm_does(tmp_path):
    from timm.layers import resample_abs_pos_embed
    name = 'vit_base_patch16_224'
    path = tmp_path / 'model.safetensors'
    source = write_timm_file(name, path, img_size=32)  # 2x2 grid
    model = PromptedTimmViT(name, img_size=48, timm_kwargs=TINY,
                            init_cfg=dict(type='Pretrained',
                                          checkpoint=str(path)))
    model.init_weights()
    expected = resample_abs_pos_embed(source.pos_embed, new_size=(3, 3),
                                      num_prefix_tokens=1)
    torch.testing.assert_close(model.timm_model.pos_embed, expected)


def test_refusals():
    with pytest.raises(TypeError, match="'resnet18' is not a ViT-family"):
        PromptedTimmViT('resnet18', img_size=32)
    # A block without a fused form is refused by name; the token form runs.
    kw = dict(img_size=32, prompt_cfg=dict(num_tokens=2, deep=True),
              timm_kwargs=dict(depth=2, embed_dim=64, num_heads=2))
    with pytest.raises(TypeError, match='ParallelThingsBlock .* no fused '
                       'prompt form'):
        PromptedTimmViT('vit_small_patch16_18x2_224', **kw)
    model = PromptedTimmViT('vit_small_patch16_18x2_224', out_type='raw',
                            fuse_prompts=False, **kw).eval()
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(model(x)[0], reference(model, x))
    with pytest.raises(ValueError, match="'vit_nope' is not a timm model"):
        PromptedTimmViT('vit_nope')
    with pytest.raises(ValueError, match='has no class token'):
        build('vit_base_patch16_siglip_224', out_type='cls_token')
    with pytest.raises(ValueError, match=r"timm_kwargs may not set "
                       r"\['num_classes'\]"):
        PromptedTimmViT('vit_base_patch16_224', timm_kwargs=dict(
            TINY, num_classes=3))
    with pytest.raises(ValueError, match='concat-channel'):
        build('vit_base_patch16_224', dict(location='concat-channel',
                                           deep=False))


def classifier(name, pretrained, seed=0, num_tokens=3):
    torch.manual_seed(seed)
    img, extra = FAMILIES[name]
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='PromptedTimmViT', model_name=name, img_size=img,
                      timm_kwargs=dict(TINY, **extra),
                      prompt_cfg=dict(num_tokens=num_tokens, deep=True),
                      init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=64)))
    return model


def test_tuned_file_round_trip_and_other_backbone(tmp_path):
    from mmengine.runner import load_checkpoint

    from tests.conftest import perturb_tuned
    from vpt_mm.checkpoints import load_model_checkpoint, save_tuned
    name = 'vit_base_patch14_reg4_dinov2'
    pretrained = tmp_path / 'model.safetensors'
    write_timm_file(name, pretrained)
    model = classifier(name, str(pretrained))
    model.init_weights()
    perturb_tuned(model, seed=2)
    tuned = str(tmp_path / 'task.safetensors')
    save_tuned(model, tuned)
    x = images(name)
    model.eval()
    for load in (load_model_checkpoint, load_checkpoint):
        fresh = classifier(name, str(pretrained), seed=5)
        load(fresh, tuned)  # mmengine's: never initialised before
        assert torch.equal(fresh.eval()(x, mode='tensor'),
                           model(x, mode='tensor'))
    other = tmp_path / 'other.pth'
    write_timm_file(name, other, init_values=0.5)
    with pytest.raises(ValueError, match='fingerprint'):
        load_model_checkpoint(classifier(name, str(other)), tuned)


def test_mixed_batch_equals_each_task_model(tmp_path):
    from vpt_mm.apis import MultiTaskClassifier, copy_frozen_backbone
    name = 'eva02_base_patch14_224'
    pretrained = tmp_path / 'model.pth'
    write_timm_file(name, pretrained)
    models = {}
    for seed, p in enumerate((3, 1, 5)):
        models[f't{p}'] = classifier(name, str(pretrained), seed, p)
        if seed:
            copy_frozen_backbone(models['t3'], models[f't{p}'])
        else:
            models['t3'].init_weights()
    server = MultiTaskClassifier(models)
    x = images(name, batch=5)
    tasks = [0, 1, 2, 1, 0]
    with torch.no_grad():
        scores = server(x, tasks)
        for j, t in enumerate(tasks):
            own = list(models.values())[t].eval()(x[j:j + 1], mode='tensor')
            torch.testing.assert_close(scores[j], own.softmax(-1)[0],
                                       atol=1e-5, rtol=1e-5)


#: The benchmark configs of timm models.
TIMM_CONFIGS = sorted(
    path for path in glob.glob(osp.join(REPO, 'configs/*/*.py'))
    if any(f'_{m}.py' in path for m in ('dinov2-b14', 'clip-b16',
                                        'siglip-b16', 'eva02-b14')))


@pytest.mark.parametrize('path', TIMM_CONFIGS)
def test_timm_configs_build_with_the_models_normalisation(path):
    """Each timm config resolves with its model's own mean/std (SigLIP's
    differ from ImageNet's) and builds and runs (with a tiny model of the
    same family)."""
    import timm

    from vpt_mm.config import resolve_config
    cfg = resolve_config(path)
    backbone = cfg.model.backbone
    pretrained = timm.models.get_pretrained_cfg(backbone.model_name)
    preprocessor = cfg.model.data_preprocessor
    assert preprocessor.mean == [round(v * 255, 4) for v in pretrained.mean]
    assert preprocessor.std == [round(v * 255, 4) for v in pretrained.std]
    assert backbone.init_cfg.checkpoint.startswith(
        f'checkpoints/timm/{backbone.model_name}.')
    if 'siglip' in path:
        assert preprocessor.mean == [127.5] * 3
    cfg.model.backbone.update(img_size=28 if '14' in path else 32,
                              timm_kwargs=TINY, init_cfg=None)
    if cfg.model.tuning.get('cache_features'):
        cfg.model.tuning.cache_features = False  # no dataset here
    cfg.model.head.in_channels = 64
    model = MODELS.build(cfg.model).eval()
    size = 28 if '14' in path else 32
    data = model.data_preprocessor(
        dict(inputs=[torch.randint(0, 255, (3, size, size),
                                   dtype=torch.uint8)]))
    scores = model(data['inputs'], mode='tensor')
    assert scores.shape == (1, cfg.model.head.num_classes)


def test_normalisation_a_config_sets_is_kept(tmp_path):
    from mmengine.config import Config

    from vpt_mm.config import apply_model_normalisation, config_from_file
    # A user's config leaving them out gets the model's on every load.
    mine = tmp_path / 'mine.py'
    base = osp.join(REPO, 'configs/vtab/vpt_deep_siglip-b16.py')
    mine.write_text(f"_base_ = [{base!r}]\nmodel = dict(data_preprocessor="
                    "dict(mean=None, std=None))\n")
    assert config_from_file(str(mine)).model.data_preprocessor.std == \
        [127.5] * 3
    cfg = Config(dict(model=dict(
        data_preprocessor=dict(mean=[1, 2, 3], std=None),
        backbone=dict(type='mmpretrain.PromptedTimmViT',
                      model_name='vit_base_patch16_siglip_224'))))
    apply_model_normalisation(cfg)
    assert cfg.model.data_preprocessor.mean == [1, 2, 3]
    assert cfg.model.data_preprocessor.std == [127.5] * 3
    cfg.model.data_preprocessor.std = None
    cfg.model.backbone.model_name = 'vit_nope'
    with pytest.raises(ValueError, match="no pretrained config .* "
                       "'vit_nope'"):
        apply_model_normalisation(cfg)


def test_standin_checkpoint_is_in_timms_layout(tmp_path):
    """tools/model_converters/standin_checkpoint.py's state for a timm
    config has timm's names, and the config's model loads it strictly."""
    from vpt_mm.config import resolve_config
    from vpt_mm.converters import (
        save_backbone_checkpoint,
        standin_backbone_state,
    )
    cfg = resolve_config(osp.join(REPO, 'configs/vtab/vpt_deep_eva02-b14.py'))
    cfg.model.backbone.update(img_size=28, timm_kwargs=TINY)
    cfg.model.head.in_channels = 64
    state = standin_backbone_state(cfg)
    assert 'blocks.0.attn.k_proj.weight' in state and 'pos_embed' in state
    path = str(tmp_path / 'standin.pth')
    save_backbone_checkpoint(state, path, 'test')
    cfg.model.backbone.init_cfg.checkpoint = path
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert torch.equal(model.backbone.timm_model.pos_embed, state['pos_embed'])


@pytest.mark.parametrize('name', ['vit_base_patch14_reg4_dinov2',
                                  'eva02_base_patch14_224',
                                  'vit_base_patch16_siglip_224'])
def test_unprompted_timm_vit_is_timms_model(name):
    """TimmViT (the baselines' backbone) reads timm's forward_features; it
    is PromptedTimmViT's unprompted form, with the same frozen tensors."""
    from vpt_mm.backbones.frozen import unprompted_model_cfg
    img, extra = FAMILIES[name]
    plain = TimmViT(name, img_size=img, out_type='raw',
                    timm_kwargs=dict(TINY, **extra)).eval()
    x = images(name)
    with torch.no_grad():
        torch.testing.assert_close(plain(x)[0],
                                   plain.timm_model.forward_features(x))
    prompted = dict(type='PromptedTimmViT', model_name=name, img_size=img,
                    timm_kwargs=dict(TINY, **extra), out_type='avg_prompt',
                    fuse_prompts=False, with_cp=True,
                    prompt_cfg=dict(num_tokens=2, deep=True))
    cfg = unprompted_model_cfg(dict(
        type='ImageClassifier', backbone=prompted,
        head=dict(type='LinearClsHead', num_classes=2, in_channels=64)))
    assert cfg['backbone'] == dict(
        type='mmpretrain.TimmViT', model_name=name, img_size=img,
        timm_kwargs=dict(TINY, **extra), out_type='avg_featmap')
    torch.manual_seed(0)
    built = MODELS.build(cfg['backbone'])
    torch.manual_seed(0)
    ours = MODELS.build(prompted)
    assert {k: v for k, v in ours.state_dict().items()
            if not k.startswith('prompt.')}.keys() == \
        built.state_dict().keys()


def baseline(name, pretrained, tuning):
    img, extra = FAMILIES[name]
    return MODELS.build(dict(
        type='TunedClassifier', tuning=tuning,
        backbone=dict(type='TimmViT', model_name=name, img_size=img,
                      timm_kwargs=dict(TINY, **extra),
                      init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
        neck=None,
        head=dict(type='LinearClsHead', num_classes=3, in_channels=64)))


@pytest.mark.parametrize('tuning', [dict(type='Linear'), dict(type='Full'),
                                    dict(type='Partial', k=1),
                                    dict(type='Bias')])
def test_baselines_on_a_timm_backbone(tmp_path, tuning):
    """Linear, Full, Partial and Bias train what they promise on TimmViT;
    the pretrained file (timm's layout) loads strictly; a tuned file loaded
    by mmengine's generic loader brings the backbone in (never initialised
    before) and equals the model it was saved from."""
    from mmengine.runner import load_checkpoint

    from tests.conftest import perturb_tuned
    from vpt_mm.checkpoints import save_tuned
    name = 'vit_base_patch14_reg4_dinov2'
    pretrained = tmp_path / 'model.safetensors'
    write_timm_file(name, pretrained)
    model = baseline(name, str(pretrained), tuning)
    model.init_weights()
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {
        'Linear': {'head.fc.weight', 'head.fc.bias'},
        'Full': {n for n, _ in model.named_parameters()},
        'Partial': {n for n, _ in model.named_parameters()
                    if n.startswith(('head.', 'backbone.timm_model.blocks.2.',
                                     'backbone.timm_model.norm.'))},
        'Bias': {n for n, _ in model.named_parameters()
                 if n.startswith('head.') or n.endswith('bias')},
    }[tuning['type']]
    assert trains == expected
    perturb_tuned(model, seed=4)
    path = str(tmp_path / 'task.safetensors')
    save_tuned(model, path)
    fresh = baseline(name, str(pretrained), tuning)
    load_checkpoint(fresh, path)
    x = images(name)
    assert torch.equal(fresh.eval()(x, mode='tensor'),
                       model.eval()(x, mode='tensor'))


def test_adapter_is_refused_on_a_timm_backbone(tmp_path):
    with pytest.raises(ValueError, match='Adapters are placed in mmpretrain'):
        baseline('vit_base_patch16_224', 'unused.pth', dict(type='Adapter'))


def test_inferencer_serves_timm_tasks_in_one_batch(tmp_path):
    """VPTInferencer (tools/infer.py's engine) on two tuned files of one
    timm DINOv2: one shared forward, each task's scores its own model's."""
    from mmengine.config import Config

    from tests.conftest import perturb_tuned
    from vpt_mm.apis import VPTInferencer, load_task_model
    from vpt_mm.checkpoints import save_tuned
    name = 'vit_base_patch14_reg4_dinov2'
    pretrained = tmp_path / 'model.safetensors'
    write_timm_file(name, pretrained)
    cfg = Config.fromfile(osp.join(REPO, 'configs/vtab/'
                                   'vpt_deep_dinov2-b14.py'))
    cfg.model.backbone.update(
        img_size=28, timm_kwargs=TINY, prompt_cfg=dict(num_tokens=3),
        init_cfg=dict(type='Pretrained', checkpoint=str(pretrained)))
    cfg.model.head.update(in_channels=64, num_classes=4)
    # The images as they are (the VTAB test pipeline resizes to 224).
    cfg.test_dataloader.dataset.pipeline = [dict(type='PackInputs')]
    files = {}
    for seed in (1, 2):
        model = MODELS.build(cfg.model)
        model.init_weights()
        perturb_tuned(model, seed=seed)
        files[f't{seed}'] = str(tmp_path / f't{seed}.safetensors')
        save_tuned(model, files[f't{seed}'])
    inferencer = VPTInferencer(cfg, files)
    assert inferencer.server is not None and not inferencer.alone
    torch.manual_seed(0)
    images = [torch.randint(0, 255, (28, 28, 3), dtype=torch.uint8).numpy()
              for _ in range(3)]
    probs = inferencer.probabilities(images, batch_size=2)
    for task, path in files.items():
        model = load_task_model(cfg, path)
        data = model.data_preprocessor(dict(inputs=[
            torch.from_numpy(img).permute(2, 0, 1).contiguous()
            for img in images]), False)
        with torch.no_grad():
            ref = model(data['inputs'], mode='tensor').softmax(-1)
        torch.testing.assert_close(probs[task], ref, atol=1e-5, rtol=1e-5)
