import os

import pytest
import torch
from mmpretrain.registry import MODELS

from tests.conftest import TINY, perturb_tuned, tiny_vit
from vpt_mm.checkpoints import (
    load_pretrained_backbone,
    load_tuned,
    save_tuned,
    tuned_state_dict,
)


def classifier(num_tokens=5, deep=True, pretrained=None, embed_dims=32):
    arch = dict(TINY, embed_dims=embed_dims)
    backbone = dict(
        type='PromptedViT',
        arch=arch,
        img_size=32,
        patch_size=8,
        prompt_cfg=dict(num_tokens=num_tokens, deep=deep))
    if pretrained:
        backbone['init_cfg'] = dict(type='Pretrained', checkpoint=pretrained)
    return MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=backbone,
            head=dict(
                type='LinearClsHead',
                num_classes=3,
                in_channels=embed_dims,
                loss=dict(type='CrossEntropyLoss'))))


def test_tuned_round_trip(tmp_path, pretrained):
    model = classifier(pretrained=pretrained)
    model.init_weights()
    with torch.no_grad():  # pretend training changed prompts and head
        model.backbone.prompt.embeddings.add_(1.0)
        model.head.fc.weight.add_(1.0)
    path = str(tmp_path / 'task.safetensors')
    saved = save_tuned(model, path)
    assert set(saved) == {
        'backbone.prompt.embeddings', 'head.fc.weight', 'head.fc.bias'
    }
    # 4 layers x 5 prompts x 32 + head, in float32, plus a small header.
    assert os.path.getsize(path) < (4 * 5 * 32 + 3 * 33) * 4 + 2048

    fresh = classifier(pretrained=pretrained)
    fresh.init_weights()
    load_tuned(fresh, path)
    model.eval()
    fresh.eval()
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(
        fresh(x, mode='tensor'), model(x, mode='tensor'))
    for key, value in tuned_state_dict(model).items():
        assert torch.equal(fresh.state_dict()[key], value)


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_tokens=10), r'saved for num_tokens=5 .* the model has '
     'num_tokens=10'),
    (dict(embed_dims=64), r'saved for embed_dims=32 .* the model has '
     'embed_dims=64'),
    (dict(deep=False), r'saved for layer_ids=\[0, 1, 2, 3\] .* the model '
     r'has layer_ids=\[0\]'),
])
def test_tuned_file_for_another_model(tmp_path, kwargs, match):
    path = str(tmp_path / 'task.safetensors')
    save_tuned(classifier(), path)
    with pytest.raises(ValueError, match=match):
        load_tuned(classifier(**kwargs), path)


def test_tuned_file_missing_keys(tmp_path):
    path = str(tmp_path / 'task.safetensors')
    save_tuned(tiny_vit(dict(num_tokens=5)), path)
    with pytest.raises(ValueError, match='does not fit the model: missing '
                       r"\['backbone.prompt.embeddings', 'head.fc.bias'"):
        load_tuned(classifier(), path)


def test_pretrained_must_fit(tmp_path, pretrained):
    state = torch.load(pretrained)['state_dict']
    del state['layers.1.ln1.weight']
    bad = str(tmp_path / 'missing.pth')
    torch.save(state, bad)
    with pytest.raises(ValueError, match="key 'layers.1.ln1.weight' is "
                       'missing from the checkpoint'):
        load_pretrained_backbone(tiny_vit(dict(num_tokens=2)), bad)

    state = torch.load(pretrained)['state_dict']
    state['extra.weight'] = torch.zeros(1)
    torch.save(state, bad)
    with pytest.raises(ValueError, match="key 'extra.weight' is unexpected"):
        load_pretrained_backbone(tiny_vit(dict(num_tokens=2)), bad)

    state = torch.load(pretrained)['state_dict']
    state['layers.0.attn.qkv.weight'] = torch.zeros(5, 5)
    torch.save(state, bad)
    with pytest.raises(ValueError, match='size mismatch for '
                       'layers.0.attn.qkv.weight'):
        load_pretrained_backbone(tiny_vit(dict(num_tokens=2)), bad)


def test_whole_model_checkpoint_needs_prefix(tmp_path, pretrained):
    state = {
        f'backbone.{k}': v
        for k, v in torch.load(pretrained)['state_dict'].items()
    }
    path = str(tmp_path / 'whole.pth')
    torch.save(dict(state_dict=state), path)
    model = tiny_vit(dict(num_tokens=2))
    with pytest.raises(ValueError, match="set prefix='backbone.'"):
        load_pretrained_backbone(model, path)
    load_pretrained_backbone(model, path, prefix='backbone')
    with pytest.raises(ValueError, match="starts with the prefix 'head.'"):
        load_pretrained_backbone(model, path, prefix='head.')


def test_frozen_prompts_are_saved_too():
    # A "prompt-fixed" task needs its random prompts to be reproduced.
    model = tiny_vit(dict(num_tokens=3, frozen=True))
    assert not model.prompt.embeddings.requires_grad
    assert set(tuned_state_dict(model)) == {'prompt.embeddings'}


def test_tuned_file_for_other_layers_of_the_same_shape(tmp_path):
    """Prompts of layers 1-2 in a model prompted at layers 3-4: the tensors
    have the same shape, the recorded layers tell them apart."""
    def build(layers):
        model = classifier()
        model.backbone.prompt = type(model.backbone.prompt)(
            dict(num_tokens=5, layers=layers), 32, 4, 8, (4, 4))
        return model
    path = str(tmp_path / 'task.safetensors')
    save_tuned(build((1, 2)), path)
    with pytest.raises(ValueError, match=r'saved for layer_ids=\[0, 1\] .* '
                       r'the model has layer_ids=\[2, 3\]'):
        load_tuned(build((3, 4)), path)


def readout_classifier(pretrained, out_type='cls_token', num_classes=3):
    cfg = dict(type='ImageClassifier',
               backbone=dict(type='PromptedViT', arch=TINY, img_size=32,
                             patch_size=8, out_type=out_type,
                             prompt_cfg=dict(num_tokens=5, deep=True),
                             init_cfg=dict(type='Pretrained',
                                           checkpoint=pretrained)),
               head=dict(type='LinearClsHead', num_classes=num_classes,
                         in_channels=32))
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def test_tuned_file_knows_its_task(tmp_path, pretrained):
    """A file trained on one task is refused on another with as many
    classes (dsprites_ori / dsprites_loc), naming both, unless transferred
    deliberately."""
    from vpt_mm.checkpoints import load_model_checkpoint
    path = str(tmp_path / 'task.safetensors')
    save_tuned(readout_classifier(pretrained), path,
               classes=[str(i) for i in range(5)], task='dsprites_ori')
    with pytest.raises(ValueError, match="trained on task 'dsprites_ori', "
                       "but this run selects task 'dsprites_loc'"):
        load_tuned(readout_classifier(pretrained), path,
                   task=dict(task='dsprites_loc'))
    with pytest.raises(ValueError, match="trained on task 'dsprites_ori'"):
        load_model_checkpoint(classifier(pretrained=pretrained), path,
                              task=dict(task='dsprites_loc'))
    with pytest.raises(ValueError, match=r"the 5 classes \['0', '1'"):
        load_tuned(readout_classifier(pretrained), path,
                   task=dict(classes=list('abcde')))
    load_tuned(readout_classifier(pretrained), path,
               task=dict(task='dsprites_ori', classes=[0, 1, 2, 3, 4]))
    load_tuned(readout_classifier(pretrained), path,
               task=dict(task='dsprites_loc'), allow_other_task=True)


def test_tuned_file_knows_its_readout(tmp_path, pretrained):
    """A head trained on [CLS] is refused on the prompts' mean, through
    vpt_mm's loaders and mmengine's generic one."""
    from mmengine.runner import load_checkpoint
    path = str(tmp_path / 'task.safetensors')
    save_tuned(readout_classifier(pretrained), path)
    match = ("trained with out_type='cls_token', but the model has "
             "out_type='avg_prompt'")
    with pytest.raises(ValueError, match=match):
        load_tuned(readout_classifier(pretrained, 'avg_prompt'), path)
    other = readout_classifier(pretrained, 'avg_prompt')
    with pytest.raises(ValueError, match=match):
        load_checkpoint(other, path)


def test_training_checkpoint_knows_its_task_and_readout(tmp_path,
                                                        pretrained):
    from vpt_mm.checkpoints import (
        CHECKPOINT_META_KEY,
        checkpoint_record,
        load_model_checkpoint,
    )
    model = readout_classifier(pretrained)
    ckpt = dict(meta=dict(epoch=1, dataset_meta=dict(classes=list('abcde'))),
                state_dict=model.state_dict())
    ckpt['meta'][CHECKPOINT_META_KEY] = checkpoint_record(model, ckpt,
                                                          task='svhn')
    path = str(tmp_path / 'epoch_1.pth')
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="task 'svhn', but this run selects "
                       "task 'eurosat'"):
        load_model_checkpoint(readout_classifier(pretrained), path,
                              task=dict(task='eurosat'))
    with pytest.raises(ValueError, match="out_type='cls_token', but the "
                       "model has out_type='avg_all'"):
        load_model_checkpoint(readout_classifier(pretrained, 'avg_all'),
                              path)
    load_model_checkpoint(readout_classifier(pretrained), path,
                          task=dict(task='svhn', classes=list('abcde')))


@pytest.mark.parametrize('kind', ['tuned', 'training'])
def test_generic_loaders_refuse_a_file_that_does_not_fit_the_head(
        tmp_path, pretrained, kind):
    """mmengine's non-strict load_checkpoint (mmpretrain's inferencer)
    refuses a 3-class file for a 7-class model instead of printing a size
    mismatch and keeping the random head."""
    from mmengine.runner import load_checkpoint

    from vpt_mm.checkpoints import CHECKPOINT_META_KEY, checkpoint_record
    model = readout_classifier(pretrained)
    if kind == 'tuned':
        path = str(tmp_path / 'task.safetensors')
        save_tuned(model, path, classes=list('abc'))
    else:
        path = str(tmp_path / 'epoch_1.pth')
        ckpt = dict(meta=dict(epoch=1), state_dict=model.state_dict())
        ckpt['meta'][CHECKPOINT_META_KEY] = checkpoint_record(model, ckpt)
        torch.save(ckpt, path)
    other = readout_classifier(pretrained, num_classes=7)
    with pytest.raises(ValueError, match=r"'head.fc.(weight|bias)' has "
                       r"shape \(3"):
        load_checkpoint(other, path)
    same = readout_classifier(pretrained)
    checkpoint = load_checkpoint(same, path)
    torch.testing.assert_close(same.head.fc.weight, model.head.fc.weight)
    if kind == 'tuned':  # the inferencer labels with the file's classes
        assert checkpoint['meta']['dataset_meta'] == dict(classes=list('abc'))


def test_pretrained_file_with_prompts_is_refused(tmp_path, pretrained):
    """A 'pretrained' file holding prompt tensors would overwrite the
    prompts while the log says they keep their initialisation."""
    state = torch.load(pretrained)['state_dict']
    state['prompt.embeddings'] = torch.ones(4, 2, 32)
    bad = str(tmp_path / 'with_prompts.pth')
    torch.save(dict(state_dict=state), bad)
    model = tiny_vit(dict(num_tokens=2, deep=True))
    with pytest.raises(ValueError, match=r"holds prompt \(or adapter\) "
                       r"tensors \(\['prompt.embeddings'\]\)"):
        load_pretrained_backbone(model, bad)
    assert not torch.equal(model.prompt.embeddings, torch.ones(4, 2, 32))


@pytest.mark.parametrize('written, ok', [(None, True), (6, True),
                                         (10, False)])
def test_num_classes_next_to_a_task_is_an_error(tmp_path, written, ok):
    from vpt_mm.config import check_num_classes_in_file
    base = os.path.abspath('configs/vtab/vpt_deep_vit-b.py')
    text = f"_base_ = ['{base}']\ntask = 'dmlab'\n"
    if written is not None:
        text += f'model = dict(head=dict(num_classes={written}))\n'
    path = tmp_path / 'mine.py'
    path.write_text(text)
    if ok:
        check_num_classes_in_file(str(path))
        check_num_classes_in_file(base)  # 100 for its cifar100
    else:
        with pytest.raises(ValueError, match="sets num_classes=10 next to "
                           "task 'dmlab', which has 6 classes"):
            check_num_classes_in_file(str(path))


def test_pretrained_checkpoint_messages(tmp_path, pretrained):
    """init_cfg at a tuned file says so (not "set prefix='backbone.'"); a
    NaN in the pretrained file names the tensor."""
    tuned = str(tmp_path / 'task.safetensors')
    save_tuned(readout_classifier(pretrained), tuned)
    with pytest.raises(ValueError, match='is a tuned-only file .*not a '
                       'pretrained backbone'):
        load_pretrained_backbone(tiny_vit(dict(num_tokens=5)), tuned)
    state = torch.load(pretrained)['state_dict']
    state['layers.1.ln1.weight'][0] = float('nan')
    bad = str(tmp_path / 'nan.pth')
    torch.save(dict(state_dict=state), bad)
    with pytest.raises(ValueError, match=r"'layers.1.ln1.weight' holds 1 "
                       'non-finite'):
        load_pretrained_backbone(tiny_vit(dict(num_tokens=5)), bad)


def test_local_scheme_leaves_other_files_as_mmengine_reads_them(tmp_path):
    """vpt_mm's loader of local files changes nothing for a checkpoint it
    did not write: the same dict, no record in its state dict's metadata."""
    from mmengine.runner.checkpoint import CheckpointLoader, load_from_local
    path = str(tmp_path / 'plain.pth')
    state = torch.nn.Linear(2, 3).state_dict()
    torch.save(dict(state_dict=state, meta=dict(epoch=1)), path)
    ours = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    theirs = load_from_local(path, map_location='cpu')
    assert ours.keys() == theirs.keys() and ours['meta'] == theirs['meta']
    assert ours['state_dict']._metadata == theirs['state_dict']._metadata
    assert type(ours['state_dict']._metadata) is \
        type(theirs['state_dict']._metadata)
    for key, value in theirs['state_dict'].items():
        assert torch.equal(ours['state_dict'][key], value)


def save_small_checkpoint(model, path):
    """Save ``model`` as a training checkpoint without its frozen backbone,
    with vpt_mm's record, as VPTRunner does; returns ``path``."""
    from vpt_mm.checkpoints import (
        CHECKPOINT_META_KEY,
        checkpoint_record,
        omit_frozen,
    )
    ckpt = dict(meta=dict(epoch=1),
                state_dict=omit_frozen(model, model.state_dict()))
    ckpt['meta'][CHECKPOINT_META_KEY] = checkpoint_record(model, ckpt,
                                                          omits=True)
    torch.save(ckpt, path)
    return path


def _frozen_vit_classifier(pretrained):
    """A head-only (Linear) classifier: its frozen backbone has no tensor in
    a tuned-only file."""
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='FrozenViT', arch=TINY, img_size=32, patch_size=8,
                      init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=32)))


@pytest.mark.parametrize('build', ['prompted', 'frozen'])
@pytest.mark.parametrize('kind', ['tuned', 'small'])
def test_generic_loader_brings_the_backbone_through_plain_metadata(
        tmp_path, pretrained, monkeypatch, build, kind):
    """mmengine's load_checkpoint into a model that was never initialised
    (mmpretrain's get_model): the file's record reaches the modules as a
    plain OrderedDict of plain dicts, the frozen backbone comes from the
    config's pretrained checkpoint (through load_pretrained, never
    init_weights), and the outputs equal vpt_mm's own loader's. A backbone
    with no tensor in the file (head-only) is brought in by its model."""
    from collections import OrderedDict

    from mmengine.runner import load_checkpoint
    from mmengine.runner.checkpoint import CheckpointLoader

    from vpt_mm.backbones import FrozenBackboneMixin
    from vpt_mm.checkpoints import (
        FILE_RECORD_KEY,
        file_record,
        load_model_checkpoint,
    )
    make = (_frozen_vit_classifier if build == 'frozen' else
            lambda p: classifier(pretrained=p))
    model = make(pretrained)
    model.init_weights()
    perturb_tuned(model, seed=1)
    if kind == 'tuned':
        path = str(tmp_path / 'task.safetensors')
        save_tuned(model, path)
    else:
        path = save_small_checkpoint(model, str(tmp_path / 'epoch_1.pth'))
    state = CheckpointLoader.load_checkpoint(path)['state_dict']
    metadata = state._metadata
    assert type(metadata) is OrderedDict
    assert all(type(entry) is dict for entry in metadata.values())
    assert file_record(state) is metadata[''][FILE_RECORD_KEY]
    assert file_record(state)['filename'] == path
    ref = make(pretrained)
    load_model_checkpoint(ref, path)

    def never(self):
        raise AssertionError('init_weights called during a load')

    monkeypatch.setattr(FrozenBackboneMixin, 'init_weights', never)
    fresh = make(pretrained)
    load_checkpoint(fresh, path)
    x = torch.rand(2, 3, 32, 32)
    ref.eval()
    fresh.eval()
    assert torch.equal(fresh(x, mode='tensor'), ref(x, mode='tensor'))
    assert torch.equal(fresh(x, mode='tensor'), model.eval()(x,
                                                              mode='tensor'))
    # Another backbone is refused, naming both fingerprints.
    other = tmp_path / 'other.pth'
    saved = torch.load(pretrained)
    saved['state_dict']['ln1.weight'] += 1
    torch.save(saved, other)
    with pytest.raises(ValueError, match='fingerprint'):
        load_checkpoint(make(str(other)), path)


def test_every_model_holding_a_vpt_mm_backbone_is_guarded(tmp_path,
                                                          pretrained):
    """A module wrapping a classifier is guarded too, so a vpt_mm file
    loaded into the wrapper is checked whole (here: its keys lack the
    wrapper's prefix)."""
    from mmengine.runner import load_checkpoint

    from vpt_mm.checkpoints import is_guarded
    model = classifier(pretrained=pretrained)
    model.init_weights()
    path = str(tmp_path / 'task.safetensors')
    save_tuned(model, path)
    wrapper = torch.nn.Module()
    wrapper.model = classifier(pretrained=pretrained)
    assert is_guarded(wrapper) and is_guarded(wrapper.model)
    assert not is_guarded(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(ValueError, match='does not fit the model'):
        load_checkpoint(wrapper, path)


def test_own_loader_applies_its_options_to_a_file_read_with_its_record(
        tmp_path, pretrained):
    """load_model_checkpoint reads a small training checkpoint through the
    scheme that attaches the file's record; its allow_other_backbone then
    holds (the modules do not check the record again, without it)."""
    from vpt_mm.checkpoints import load_model_checkpoint
    model = classifier(pretrained=pretrained)
    model.init_weights()
    path = save_small_checkpoint(model, str(tmp_path / 'epoch_1.pth'))
    with pytest.raises(ValueError, match='fingerprint'):
        load_model_checkpoint(classifier(), path)
    other = classifier()
    load_model_checkpoint(other, path, allow_other_backbone=True)
    assert torch.equal(other.head.fc.weight, model.head.fc.weight)
