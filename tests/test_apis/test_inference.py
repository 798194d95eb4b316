"""VPTInferencer and load_task_model on the demo's tiny ViT config."""
import pytest
import torch
from mmpretrain.registry import DATASETS, MODELS

from tests.conftest import perturb_tuned
from tests.test_tools.test_train import write_config
from vpt_mm.apis import VPTInferencer, load_task_model, parse_task_args
from vpt_mm.checkpoints import save_tuned
from vpt_mm.config import config_from_file

CLASSES = ['5', '6', '7', '8', '9']


def tuned_file(cfg_path, path, seed, pretrained=True, classes=CLASSES,
               **prompt):
    """A 'trained' task: the config's model with other prompts, random
    prompt and head values, saved as a tuned-only file with ``classes``."""
    cfg = config_from_file(cfg_path)
    cfg.model.backbone.prompt_cfg.update(prompt)
    if not pretrained:
        cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    model.init_weights()
    save_tuned(perturb_tuned(model, seed), path, classes)
    return path


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('infer')
    cfg = write_config(tmp, epochs=1)
    files = dict(
        deep8=tuned_file(cfg, str(tmp / 'deep8.safetensors'), 0),
        deep3=tuned_file(cfg, str(tmp / 'deep3.safetensors'), 1,
                         num_tokens=3),
        shallow5=tuned_file(cfg, str(tmp / 'shallow5.safetensors'), 2,
                            num_tokens=5, deep=False),
        other=tuned_file(cfg, str(tmp / 'other.safetensors'), 3,
                         pretrained=False))
    images = [DATASETS.build(dict(
        type='SklearnDigits', digits=[5, 6, 7, 8, 9], split='test',
        pipeline=[]))[i]['img'] for i in range(7)]
    return cfg, files, images


def reference(cfg, path, images):
    model = load_task_model(cfg, path)
    data = model.data_preprocessor(dict(inputs=[
        torch.from_numpy(img).permute(2, 0, 1).contiguous()
        for img in images]), False)
    with torch.no_grad():
        return model(data['inputs'], mode='tensor').softmax(-1)


def test_tasks_and_ensembles_equal_their_own_models(setup):
    cfg, files, images = setup
    inferencer = VPTInferencer(cfg, dict(
        deep8=files['deep8'], shallow5=files['shallow5'],
        ens=[files['deep8'], files['deep3']]))
    # All three prompted-ViT tasks share one backbone and one forward.
    assert inferencer.server is not None and not inferencer.alone
    assert inferencer.server.task_names == ['deep8', 'shallow5', 'ens#0',
                                            'ens#1']
    probs = inferencer.probabilities(images, batch_size=3)
    refs = {n: reference(cfg, files[n], images)
            for n in ('deep8', 'deep3', 'shallow5')}
    torch.testing.assert_close(probs['deep8'], refs['deep8'], atol=1e-5,
                               rtol=1e-5)
    torch.testing.assert_close(probs['shallow5'], refs['shallow5'],
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs['ens'],
                               (refs['deep8'] + refs['deep3']) / 2,
                               atol=1e-5, rtol=1e-5)
    results = inferencer(images)
    assert len(results) == 7 and set(results[0]) == {'deep8', 'shallow5',
                                                     'ens'}
    row = results[0]['deep8']
    assert row['pred_label'] == int(refs['deep8'][0].argmax())
    assert row['pred_class'] == CLASSES[row['pred_label']]
    assert len(row['pred_scores']) == 5
    # The tuned file decides the prompt length and layers.
    model = load_task_model(cfg, files['shallow5'])
    assert model.backbone.prompt.num_tokens == 5
    assert model.backbone.prompt.layer_ids == [0]


def test_a_file_of_another_backbone_is_refused(setup):
    cfg, files, _ = setup
    with pytest.raises(ValueError, match='fingerprint'):
        VPTInferencer(cfg, dict(deep8=files['deep8'], other=files['other']))


def test_task_arguments(setup, tmp_path):
    _, files, _ = setup
    assert parse_task_args([f'a={files["deep8"]}',
                            f'b={files["deep8"]},{files["deep3"]}']) == {
        'a': [files['deep8']], 'b': [files['deep8'], files['deep3']]}
    with pytest.raises(ValueError, match='expected NAME=FILE'):
        parse_task_args(['a'])
    with pytest.raises(ValueError, match='given twice'):
        parse_task_args([f'a={files["deep8"]}', f'a={files["deep3"]}'])
    with pytest.raises(FileNotFoundError, match='does not exist'):
        parse_task_args([f'a={tmp_path}/missing.safetensors'])


def test_tasks_that_tune_the_backbone_run_alone(setup, tmp_path):
    """A Bias config: its tasks cannot share the frozen backbone, so each
    runs on a model of its own, with the same results as that model."""
    cfg_path, _, images = setup
    cfg = config_from_file(cfg_path)
    cfg.model.backbone.trainable = [r'(^|\.)bias$']
    paths = []
    for seed in (0, 1):
        model = MODELS.build(cfg.model)
        model.init_weights()
        paths.append(str(tmp_path / f'bias{seed}.safetensors'))
        save_tuned(perturb_tuned(model, seed, 0.1), paths[-1], CLASSES)
    inferencer = VPTInferencer(cfg, dict(a=paths[0], b=paths[1]))
    assert inferencer.server is None and sorted(inferencer.alone) == [
        'a', 'b']
    probs = inferencer.probabilities(images)
    for name, path in zip('ab', paths):
        torch.testing.assert_close(probs[name], reference(cfg, path, images),
                                   atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_images_are_refused_by_name(setup, tmp_path, bad):
    """A NaN / inf image gets no pred_label 0 and no NaN score: it is
    refused, naming it (arrays by index, files by path)."""
    import numpy as np
    cfg, files, images = setup
    inferencer = VPTInferencer(cfg, dict(deep8=files['deep8']))
    broken = images[1].astype(np.float32)
    broken[0, 0, 0] = bad
    with pytest.raises(ValueError, match='input array 1 has non-finite '
                       r'pixel values \(NaN or inf\)'):
        inferencer([images[0], broken])
    path = str(tmp_path / 'broken.npy')
    np.save(path, broken)
    inferencer.reader.reads_files = True  # a float-image reader
    inferencer.reader._from_file = lambda data: dict(
        inputs=torch.from_numpy(np.load(data['img_path'])).permute(2, 0, 1),
        data_samples=None)
    with pytest.raises(ValueError, match=f'image {path} has non-finite'):
        inferencer([path])


def test_non_finite_scores_are_refused(setup):
    cfg, files, images = setup
    inferencer = VPTInferencer(cfg, dict(deep8=files['deep8']))
    with torch.no_grad():
        inferencer.server.heads[0].fc.bias.fill_(float('inf'))
    with pytest.raises(FloatingPointError, match="Task 'deep8' gave "
                       'non-finite scores for input array 0'):
        inferencer(images[:2])
