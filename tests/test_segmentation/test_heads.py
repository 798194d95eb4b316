"""LinearBNHead, and the DINOv2 linear-head ADE20K config built with a tiny
timm DINOv2."""
import os.path as osp

import pytest
import torch

import vpt_mm  # noqa: F401
from tests.seg_configs import REPO
from vpt_mm.segmentation import LinearBNHead


def test_linear_bn_head_is_batch_norm_then_a_pixel_classifier():
    torch.manual_seed(0)
    head = LinearBNHead(in_channels=8, channels=8, num_classes=3,
                        dropout_ratio=0.0, norm_cfg=dict(type='BN')).eval()
    with torch.no_grad():
        head.bn.running_mean.normal_()
        head.bn.running_var.uniform_(0.5, 2)
    x = torch.rand(2, 8, 4, 5)
    normed = (x - head.bn.running_mean[:, None, None]) / torch.sqrt(
        head.bn.running_var[:, None, None] + head.bn.eps)
    normed = normed * head.bn.weight[:, None, None] + head.bn.bias[:, None,
                                                                   None]
    expected = torch.einsum('bchw,kc->bkhw', normed,
                            head.conv_seg.weight[:, :, 0, 0]) + \
        head.conv_seg.bias[None, :, None, None]
    torch.testing.assert_close(head([x]), expected)
    concat = LinearBNHead(in_channels=[4, 4], channels=8, in_index=[0, 1],
                          input_transform='resize_concat', num_classes=3,
                          norm_cfg=dict(type='BN'))
    assert concat([torch.rand(1, 4, 4, 4),
                   torch.rand(1, 4, 2, 2)]).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match='channels must be 8'):
        LinearBNHead(in_channels=8, channels=16, num_classes=3)


def test_dinov2_linear_head_config_trains_head_and_prompts():
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import MODELS
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from vpt_mm.config import resolve_config
    cfg = resolve_config(osp.join(
        REPO, 'configs/setr/linear-head_vpt_deep_dinov2-b14_ade20k.py'))
    assert cfg.model.auxiliary_head is None
    cfg.model.backbone.update(
        img_size=(56, 56), out_indices=(3, ), init_cfg=None,
        timm_kwargs=dict(depth=4, embed_dim=32, num_heads=2))
    cfg.model.decode_head.update(in_channels=32, channels=32)
    cfg.model.data_preprocessor.size = (56, 56)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    trains = {n.split('.')[0] for n, p in model.named_parameters()
              if p.requires_grad}
    assert trains == {'backbone', 'decode_head'}
    assert {n for n, p in model.backbone.named_parameters()
            if p.requires_grad} == {'prompt.embeddings'}
    sample = SegDataSample(gt_sem_seg=PixelData(
        data=torch.randint(0, 150, (1, 56, 56))))
    sample.set_metainfo(dict(img_shape=(56, 56), ori_shape=(56, 56),
                             pad_shape=(56, 56)))
    data = model.data_preprocessor(dict(
        inputs=[torch.randint(0, 255, (3, 56, 56), dtype=torch.uint8)],
        data_samples=[sample]), training=True)
    model.train()
    losses = model(**data, mode='loss')
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    loss.backward()
    assert model.backbone.prompt.embeddings.grad.abs().sum() > 0
