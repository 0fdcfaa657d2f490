"""The notebooks in the docs, and links that work both in the repository and in the built site.

The notebooks live in ``notebooks/`` (jupytext py:percent). Sphinx reads only files under
``docs/``, so at ``config-inited`` they are copied to ``docs/notebooks/`` (generated, ignored by
git, refreshed on every build), where myst-nb renders and executes them.

Links are written as a reader of the repository follows them: a mechanism page points to
``../../notebooks/attention_lsh.py`` and the notebook points back to
``../docs/mechanisms/attention.lsh.md``. At ``source-read`` each relative Markdown link is
resolved from the file's place in the repository; one that lands on a notebook or on a docs
page is rewritten relative to the document's place in the docs. A link to another file of the
repository (``../reference/attention/lsh.py``, useful on GitHub and in Jupyter) has no page in the
site, so there it keeps only its text. Nothing else is changed.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
SOURCE = ROOT / "notebooks"
COPY = DOCS / "notebooks"

_LINK = re.compile(r"\[([^\]]*)\]\((?!#|[a-z][a-z0-9+.-]*:)([^)\s]+)\)")


def copy_notebooks(app, config) -> None:
    """docs/notebooks/ := notebooks/*.py (mtimes kept, so an unchanged notebook is not re-read)."""
    COPY.mkdir(exist_ok=True)
    wanted = {p.name for p in SOURCE.glob("*.py")}
    for stale in COPY.glob("*.py"):
        if stale.name not in wanted:
            stale.unlink(missing_ok=True)
    for name in sorted(wanted):
        src, dst = SOURCE / name, COPY / name
        if not dst.is_file() or dst.read_bytes() != src.read_bytes():
            partial = COPY / f".{name}.{os.getpid()}"  # copy, then rename: a concurrent build never reads half a file
            shutil.copy2(src, partial)
            os.replace(partial, dst)


def docs_link(target: str, repo_dir: Path, docs_dir: Path) -> str | None:
    """``target`` (relative to ``repo_dir`` in the repository) as seen from ``docs_dir``; None: no page."""
    path, sep, anchor = target.partition("#")
    resolved = Path(os.path.normpath(repo_dir / path))
    if resolved.parent == SOURCE and resolved.suffix == ".py":
        resolved = COPY / resolved.name
    elif not resolved.is_relative_to(DOCS):
        return None if resolved.is_relative_to(ROOT) and resolved.exists() else target
    return os.path.relpath(resolved, docs_dir) + sep + anchor


def _rewrite(match: re.Match, repo_dir: Path, docs_dir: Path) -> str:
    text, target = match.group(1), match.group(2)
    seen = docs_link(target, repo_dir, docs_dir)
    return text if seen is None else f"[{text}]({seen})"


def rewrite_links(app, docname: str, source: list[str]) -> None:
    docs_file = Path(app.env.doc2path(docname))
    repo_dir = SOURCE if docs_file.parent == COPY else docs_file.parent
    source[0] = _LINK.sub(lambda m: _rewrite(m, repo_dir, docs_file.parent), source[0])


def setup(app):
    app.connect("config-inited", copy_notebooks)
    app.connect("source-read", rewrite_links)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
