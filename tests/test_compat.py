import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from vpt_mm import compat


def test_torchvision_ops_defined_and_noop_when_done():
    # vpt_mm is imported: torchvision imports, and nms has a schema.
    import torchvision  # noqa: F401
    assert hasattr(torch.ops.torchvision, 'nms')
    assert hasattr(torch.ops.torchvision, 'qnms')
    # torchvision is imported now: nothing left to do.
    assert compat.patch_torchvision_ops() is False


def test_torchvision_fix_in_a_fresh_interpreter():
    code = ('import vpt_mm.compat as c; fixed = c.patch_torchvision_ops(); '
            'import torchvision, timm; '
            'import torchvision.ops as ops, torch; '
            'print("fixed" if fixed else "native")')
    out = subprocess.run([sys.executable, '-c', code],
                         capture_output=True,
                         text=True,
                         check=True)
    # Either the extension loads (nothing patched) or the schemas are made.
    assert out.stdout.strip() in ('fixed', 'native')


def test_mmcv_ext_stub_raises_clearly():
    from mmengine.utils.dl_utils import mmcv_full_available
    ext = sys.modules['mmcv._ext']
    if not getattr(ext, 'vpt_mm_stub', False):
        pytest.skip('a compiled mmcv is installed; the stub is not used')
    assert mmcv_full_available() is False
    with pytest.raises(NotImplementedError, match='compiled mmcv extension'):
        ext.nms(None)
    import mmseg.models  # noqa: F401  (imports mmcv.ops)


def test_mmcv_ext_noop_when_present(monkeypatch):
    real = types.ModuleType('mmcv._ext')
    monkeypatch.setitem(sys.modules, 'mmcv._ext', real)
    assert compat.patch_mmcv_ext() is False
    assert sys.modules['mmcv._ext'] is real


def test_checkpoint_with_message_hub_loads_weights_only(tmp_path):
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('test_compat')
    hub.update_scalar('train/loss', 1.5)
    hub.update_info('np_scalar', np.float64(2.0))
    ckpt = dict(
        message_hub=hub.state_dict(),
        meta=dict(seed=np.int64(3), dtype=np.dtype('float32')))
    path = tmp_path / 'ckpt.pth'
    torch.save(ckpt, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded['meta']['seed'] == 3
    buf = loaded['message_hub']['log_scalars']['train/loss']
    assert buf.current() == 1.5 and buf.statistics('mean') == 1.5
    assert compat.patch_checkpoint_safe_globals() is False  # already done


def test_package_lookups_without_pkg_resources():
    import os.path as osp

    import mmseg
    assert compat._is_installed('mmseg')
    assert compat._is_installed('mmsegmentation')
    assert not compat._is_installed('no_such_package_vpt_mm')
    expected = osp.dirname(mmseg.__file__)
    assert compat._get_installed_path('mmseg') == expected
    assert compat._get_installed_path('mmsegmentation') == expected
    with pytest.raises(Exception, match='no_such_package_vpt_mm'):
        compat._get_installed_path('no_such_package_vpt_mm')


def test_configs_inherit_from_mmseg_package(tmp_path):
    from mmengine.config import Config
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(
        "_base_ = ['mmseg::setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py']"
        '\n')
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.model.decode_head.type == 'SETRUPHead'
    assert tuple(cfg.model.backbone.out_indices) == (9, 14, 19, 23)


def test_upstream_config_loader_reads_mmpretrain_bases(tmp_path):
    """mmpretrain's / mmseg's own tools parse a config before vpt_mm is
    imported: a user config inheriting ``mmpretrain::`` bases must load
    there (the install pins setuptools<81, which ships pkg_resources)."""
    import subprocess
    import sys
    cfg = tmp_path / 'mine.py'
    cfg.write_text("_base_ = ['mmpretrain::_base_/models/resnet18.py']\n")
    proc = subprocess.run(
        [sys.executable, '-c', 'import sys; from mmengine.config import '
         'Config; assert "vpt_mm" not in sys.modules; '
         f'print(Config.fromfile({str(cfg)!r}).model.type)'],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == 'ImageClassifier'
