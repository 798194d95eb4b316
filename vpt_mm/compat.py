"""Compatibility fixes for the OpenMMLab stack on recent PyTorch builds.

``vpt_mm/__init__.py`` imports this module before anything else and calls
:func:`apply_all`. Each fix is a no-op where the environment does not need it:

1. **torchvision without its compiled ops.** On a CPU-only torch, a
   torchvision wheel linked against CUDA libraries cannot load ``_C``, and
   ``import torchvision`` (so also timm, ``mmpretrain.models`` and
   ``mmseg.models``) fails with ``operator torchvision::nms does not exist``.
   When (and only when) the extension cannot be loaded, the schemas of
   ``torchvision::nms`` and ``torchvision::qnms`` are defined without kernels,
   so torchvision imports; calling ``nms`` still fails, which VPT never does.
2. **mmcv-lite has no ``mmcv._ext``**, but mmseg imports ``mmcv.ops``
   unconditionally in a few modules. When the real extension is absent, a
   stand-in module is registered whose functions raise a clear
   :class:`NotImplementedError` when called. ``mmcv_full_available()`` stays
   ``False``. Users with a compiled mmcv are not touched.
3. **torch >= 2.6 loads checkpoints with ``weights_only=True``** and
   mmengine's checkpoints carry ``HistoryBuffer`` and numpy scalars/dtypes in
   their ``message_hub``. Exactly those classes are added to
   :func:`torch.serialization.add_safe_globals`, which makes ``resume`` and
   ``load_from`` work without turning the safety check off. mmengine also
   pickles ``HistoryBuffer``'s statistics functions (``min``, ``max``...),
   which needs the builtin ``getattr`` in the unpickler; rather than allow
   ``getattr``, ``HistoryBuffer`` is made to pickle its data only (those
   functions are a class-level registry that importing mmengine restores).
   Checkpoints written by mmengine *without* vpt_mm imported still carry
   them and fail to resume under ``weights_only``: load them with
   ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` only if you trust their source.
   Any checkpoint still goes through the ``weights_only`` unpickler, which
   only admits the allow-listed classes.
4. **setuptools >= 81 has no ``pkg_resources``**, which mmengine's
   ``is_installed`` / ``get_installed_path`` import, so configs inheriting
   ``mmseg::...`` or ``mmpretrain::...`` base files fail to load. When
   ``pkg_resources`` cannot be imported, both functions are replaced (in
   ``mmengine.utils`` and where ``mmengine.config`` imported them) by
   equivalents on ``importlib.metadata`` / ``importlib.util``. This takes
   effect once vpt_mm is imported, as vpt_mm's tools do before they parse a
   config; for other launchers install ``setuptools<81``.
"""
from __future__ import annotations

import glob
import importlib.machinery
import importlib.util
import os
import sys
import types

import torch

__all__ = [
    'apply_all', 'patch_torchvision_ops', 'patch_mmcv_ext',
    'patch_checkpoint_safe_globals', 'patch_mmengine_package_utils'
]

# Keeps the torch.library handle alive; dropping it would undefine the ops.
_TORCHVISION_LIB: torch.library.Library | None = None
_STUB_EXT_NAME = 'mmcv._ext'


def _torchvision_op_defined(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def patch_torchvision_ops() -> bool:
    """Define the torchvision NMS schemas when its extension cannot load.

    Returns:
        bool: ``True`` if the schemas were defined by this call.
    """
    global _TORCHVISION_LIB
    if 'torchvision' in sys.modules or _torchvision_op_defined('nms'):
        return False
    spec = importlib.util.find_spec('torchvision')
    if spec is None or not spec.submodule_search_locations:
        return False
    for location in spec.submodule_search_locations:
        for lib_path in glob.glob(os.path.join(location, '_C*')):
            try:
                torch.ops.load_library(lib_path)
            except (OSError, ImportError, RuntimeError):
                continue
    if _torchvision_op_defined('nms'):
        return False
    lib = torch.library.Library('torchvision', 'DEF')
    lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) '
               '-> Tensor')
    lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) '
               '-> Tensor')
    _TORCHVISION_LIB = lib
    return True


class _MissingExt(types.ModuleType):
    """Stand-in for ``mmcv._ext`` whose every function raises."""

    def __getattr__(self, name: str):
        if name.startswith('__'):
            raise AttributeError(name)

        def _unavailable(*args, **kwargs):
            raise NotImplementedError(
                f'mmcv op "{name}" needs the compiled mmcv extension, which '
                'mmcv-lite does not have. Install full mmcv (e.g. '
                '`mim install mmcv==2.1.0`) to use it; vpt_mm itself never '
                'calls compiled mmcv ops.')

        _unavailable.__name__ = name
        return _unavailable


def patch_mmcv_ext() -> bool:
    """Register a stand-in ``mmcv._ext`` when mmcv has no compiled ops.

    Returns:
        bool: ``True`` if the stand-in was registered by this call.
    """
    if _STUB_EXT_NAME in sys.modules:
        return False
    try:
        mmcv_spec = importlib.util.find_spec('mmcv')
    except (ImportError, ValueError):
        return False
    if mmcv_spec is None:
        return False
    if importlib.util.find_spec(_STUB_EXT_NAME) is not None:
        return False
    stub = _MissingExt(_STUB_EXT_NAME,
                       'Stand-in for the missing compiled mmcv ops.')
    # A spec without a loader: mmengine's ``mmcv_full_available()`` and
    # ``pkgutil.find_loader`` then still report that no extension exists.
    stub.__spec__ = importlib.machinery.ModuleSpec(_STUB_EXT_NAME, None)
    stub.vpt_mm_stub = True
    sys.modules[_STUB_EXT_NAME] = stub
    return True


def _numpy_safe_globals() -> list:
    import numpy as np
    try:
        multiarray = importlib.import_module('numpy._core.multiarray')
    except ImportError:  # numpy 1.x
        multiarray = importlib.import_module('numpy.core.multiarray')
    classes = [multiarray.scalar, np.dtype, multiarray._reconstruct,
               np.ndarray]
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        classes += [
            getattr(dtypes, name) for name in dir(dtypes)
            if name.endswith('DType')
        ]
    return classes


def _history_buffer_getstate(self) -> dict:
    """``HistoryBuffer`` state without its statistics functions."""
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    return state


def patch_checkpoint_safe_globals() -> bool:
    """Allow-list the classes found in mmengine checkpoints' meta data.

    Returns:
        bool: ``True`` if classes were added to the allow-list.
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:  # torch < 2.4 loads without weights_only
        return False
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:
        return False
    if getattr(HistoryBuffer.__getstate__, '__module__', '') != __name__:
        HistoryBuffer.__getstate__ = _history_buffer_getstate
    classes = [HistoryBuffer] + _numpy_safe_globals()
    known = set(torch.serialization.get_safe_globals())
    missing = [cls for cls in classes if cls not in known]
    if missing:
        add_safe_globals(missing)
    return bool(missing)


def _is_installed(package: str) -> bool:
    """``mmengine.utils.is_installed`` without ``pkg_resources``."""
    import importlib.metadata
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        spec = importlib.util.find_spec(package)
        return spec is not None and spec.origin is not None


def _get_installed_path(package: str) -> str:
    """``mmengine.utils.get_installed_path`` without ``pkg_resources``:
    the folder of the importable module named ``package`` (or, for a
    distribution name such as ``mmsegmentation``, of its top-level
    module)."""
    import importlib.metadata
    names = [package]
    try:
        dist = importlib.metadata.distribution(package)
        top = dist.read_text('top_level.txt') or ''
        names += [n.strip() for n in top.split() if n.strip()]
    except importlib.metadata.PackageNotFoundError:
        pass
    for name in names:
        spec = importlib.util.find_spec(name.replace('-', '_'))
        if spec is not None and spec.origin is not None:
            return os.path.dirname(spec.origin)
    raise importlib.metadata.PackageNotFoundError(package)


def patch_mmengine_package_utils() -> bool:
    """Replace mmengine's ``pkg_resources``-based package lookups when
    ``pkg_resources`` is missing (fix 4); return whether it patched."""
    # Found without importing it (its import warns that it is deprecated).
    if importlib.util.find_spec('pkg_resources') is not None:
        return False
    import mmengine.config.config as config_module
    import mmengine.utils as utils
    import mmengine.utils.package_utils as package_utils
    for module in (package_utils, utils, config_module):
        if hasattr(module, 'is_installed'):
            module.is_installed = _is_installed
        if hasattr(module, 'get_installed_path'):
            module.get_installed_path = _get_installed_path
    return True


def apply_all() -> dict:
    """Apply every fix; return which ones changed the environment."""
    return dict(
        torchvision_ops=patch_torchvision_ops(),
        mmcv_ext=patch_mmcv_ext(),
        checkpoint_safe_globals=patch_checkpoint_safe_globals(),
        mmengine_package_utils=patch_mmengine_package_utils())
