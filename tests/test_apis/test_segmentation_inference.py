"""init_segmentor + mmseg's own inference_model on a tuned SETR task."""
import os.path as osp

import torch

from tests.seg_configs import (
    build_seg_model,
    write_pretrained,
    write_seg_config,
)
from vpt_mm import save_tuned
from vpt_mm.apis import init_segmentor
from vpt_mm.datasets.synthetic import make_ade20k_layout


def test_tuned_setr_task_through_mmseg_inference(tmp_path):
    from mmseg.apis import inference_model
    data_root = make_ade20k_layout(str(tmp_path))
    ckpt = write_pretrained(str(tmp_path / 'vit.pth'))
    cfg = write_seg_config(str(tmp_path / 'cfg.py'), 'vpt_deep', ckpt,
                           data_root)
    _, trained = build_seg_model(cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in trained.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    tuned = str(tmp_path / 'task.safetensors')
    save_tuned(trained, tuned)
    model = init_segmentor(cfg, tuned)
    assert len(model.dataset_meta['classes']) == 150
    image = osp.join(data_root, 'images', 'validation',
                     'ADE_valid_00000000.jpg')
    result = inference_model(model, image)
    assert tuple(result.pred_sem_seg.data.shape) == (1, 48, 80)
    # The same as the trained model itself.
    trained.cfg = model.cfg
    expected = inference_model(trained.eval(), image)
    assert torch.equal(result.pred_sem_seg.data,
                       expected.pred_sem_seg.data)
    torch.testing.assert_close(result.seg_logits.data,
                               expected.seg_logits.data)
