"""The shell blocks of the README and the docs, as the tests read them.

Every ```bash block starts with a comment line saying where it runs:

- ``# CPU: ...``: on a CPU in a few minutes; the suite runs it as written
  (``data/smoke`` and ``work_dirs/smoke`` moved to a temporary folder);
- ``# CI: ...``: ``.ci/run`` runs these lines (install, tests, docs build);
- ``# GPU: ...`` / ``# Needs ...``: needs a GPU, a real dataset or a
  downloaded checkpoint; not run, and the page says so;
- ``# Synopsis ...``: a command line with placeholders, not a command.
"""
from __future__ import annotations

import glob
import os
import os.path as osp
import re
import subprocess
from dataclasses import dataclass
from typing import List

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MARKERS = ('# CPU:', '# CI:', '# GPU:', '# Needs ', '# Synopsis')
FENCE = re.compile(r'^```(bash|sh|shell|console)\s*\n(.*?)^```', re.M | re.S)


@dataclass
class Block:
    """One shell block: its page (relative to the repository), the heading
    it is under, its index among the blocks under that heading, and its
    text."""

    page: str
    heading: str
    index: int
    text: str

    @property
    def marker(self) -> str:
        """The marker its first line starts with ('' if none)."""
        first = self.text.split('\n', 1)[0]
        return next((m for m in MARKERS if first.startswith(m)), '')

    @property
    def name(self) -> str:
        """``page#heading[index]``, for test ids and messages."""
        return f'{self.page}#{self.heading}[{self.index}]'


def pages() -> List[str]:
    """The README and every Markdown page of docs/en, relative paths."""
    found = sorted(glob.glob(osp.join(REPO, 'docs', 'en', '**', '*.md'),
                             recursive=True))
    return ['README.md'] + [osp.relpath(p, REPO) for p in found
                            if '_build' not in p]


def blocks(page: str) -> List[Block]:
    """The shell blocks of one page, in order."""
    with open(osp.join(REPO, page)) as f:
        text = f.read()
    out, counts = [], {}
    for match in FENCE.finditer(text):
        # Lines starting with # inside earlier code blocks are comments.
        outside = re.sub(r'^```.*?^```', '', text[:match.start()],
                         flags=re.M | re.S)
        headings = re.findall(r'^#{1,6} (.+)$', outside, re.M)
        heading = headings[-1] if headings else ''
        counts[heading] = counts.get(heading, -1) + 1
        out.append(Block(page, heading, counts[heading], match.group(2)))
    return out


def all_blocks() -> List[Block]:
    """Every shell block of :func:`pages`."""
    return [b for page in pages() for b in blocks(page)]


def block(page: str, heading: str, index: int = 0) -> Block:
    """The block ``index`` under the heading that starts with ``heading``."""
    for b in blocks(page):
        if b.heading.startswith(heading) and b.index == index:
            return b
    raise AssertionError(f'no shell block {index} under {heading!r} in '
                         f'{page}')


def run_block(b: Block, tmp_path, timeout: int = 1200) -> str:
    """Run a ``# CPU:`` block as written from the repository root, with its
    ``data/smoke`` and ``work_dirs/smoke`` under ``tmp_path``; returns
    stdout + stderr and fails the test (with the tail) on a non-zero
    exit."""
    assert b.marker == '# CPU:', f'{b.name} is not a CPU block'
    script = b.text.replace('data/smoke', str(tmp_path / 'data')).replace(
        'work_dirs/smoke', str(tmp_path / 'work'))
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(['bash', '-euo', 'pipefail', '-c', script],
                          cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{b.name}:\n{out[-4000:]}'
    return out
