"""Sphinx configuration of the vpt_mm docs site (``docs/en``).

Build: ``sphinx-build -W -n --keep-going -b html docs/en docs/en/_build/html``
(every warning, broken cross-reference included, fails the build).
"""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
sys.path.insert(0, ROOT)

import vpt_mm  # noqa: E402  (environment fixes before autodoc imports)

project = 'vpt_mm'
author = 'vpt_mm developers'
copyright = '2026, vpt_mm developers'
release = vpt_mm.__version__
version = release

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.viewcode',
]
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
exclude_patterns = ['_build']
myst_enable_extensions = ['colon_fence']
# ``[text](page.md#a-heading)`` links: anchors for every heading level used.
myst_heading_anchors = 4

napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_default_options = {'members': True, 'show-inheritance': True}

# Without network access (CI, the GPU machines) there is no intersphinx:
# names of other libraries cannot resolve and are not errors. Every name of
# vpt_mm must resolve (``-n``).
nitpick_ignore_regex = [
    (r'py:.*', r'(torch|mmengine|mmpretrain|mmseg|mmcv|numpy|np|timm|PIL|'
               r'safetensors|sklearn|matplotlib|scipy|collections|typing|'
               r'pathlib|os|argparse|logging|concurrent|subprocess|'
               r'contextlib|dataclasses|enum|abc|types|io)(\..*)?'),
    (r'py:class', r'(nn\..*|Tensor|optional|callable|Path|module|'
                  r'Module|Config|ConfigDict|BaseDataset|BaseModel|'
                  r'DataSample|SegDataSample|Runner|SwinBlock|Log|Dataset|'
                  r'OptimWrapper|BaseDecodeHead|dict tuple)'),
    (r'py:func', r'open'),
]

html_theme = 'furo'
html_title = f'vpt_mm {release}'
html_static_path = ['_static']
pygments_style = 'friendly'


def _resolve_vpt_mm_reference(app, env, node, contnode):
    """Resolve a ``vpt_mm`` cross-reference the Python domain missed.

    Docstrings name objects the way users import them: by a package's
    public path (``vpt_mm.backbones.PromptedViT``), or by a bare name from
    a sibling module (``check_task``, ``PromptPlan``). The API page
    documents each object once, under the module that defines it. This
    finds that entry: the object's own module and name (for a public path
    that imports), else the single documented object whose name ends in
    ``.<target>``. Anything else stays a missing reference (an error under
    ``-n -W``).
    """
    if node.get('refdomain') != 'py':
        return None
    import importlib

    from sphinx.util.nodes import make_refnode

    domain = env.get_domain('py')
    target = node['reftarget'].lstrip('.~')
    objects = domain.objects
    candidates = []
    module, _, name = target.rpartition('.')
    if module.startswith('vpt_mm'):
        try:
            obj = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            obj = None
        canonical = getattr(obj, '__module__', None)
        if canonical and f'{canonical}.{name}' in objects:
            candidates = [f'{canonical}.{name}']
    if not candidates:
        candidates = [full for full in objects
                      if full.endswith('.' + target)
                      and full.startswith('vpt_mm.')]
    if len(candidates) != 1:
        return None
    entry = objects[candidates[0]]
    return make_refnode(app.builder, node['refdoc'], entry.docname,
                        entry.node_id, contnode, candidates[0])


def setup(app):
    app.connect('missing-reference', _resolve_vpt_mm_reference)
