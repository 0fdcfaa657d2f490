"""How the docs read the notebooks: jupytext py:percent files from notebooks/ (seen as docs/notebooks/).

The notebooks link to the docs as a reader of the repository sees them, relative to
``notebooks/``: ``../docs/mechanisms/attention.lsh.md``. Sphinx sees the same file at
``docs/notebooks/attention_lsh.py``, from where that page is ``../mechanisms/attention.lsh.md``;
:func:`read_percent` rewrites the ``../docs/`` prefix of Markdown links and nothing else.
"""

from __future__ import annotations

import re

import jupytext
import nbformat

_REPO_LINK = re.compile(r"\]\(\.\./docs/")


def read_percent(text: str) -> nbformat.NotebookNode:
    """The notebook in ``text`` (jupytext py:percent), its links to docs/ made relative to docs/notebooks/."""
    notebook = jupytext.reads(text, fmt="py:percent")
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = _REPO_LINK.sub("](../", cell.source)
    return notebook
