"""Sphinx configuration: MyST Markdown pages, maths by MathJax, no notebook execution."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import reference  # noqa: E402

project = "ICLR 2020 oracle"
author = "the oracle's maintainers"
copyright = "2026, " + author
version = release = reference.__version__

# myst_parser alone: the docs are Markdown pages; notebooks live in notebooks/ and are
# executed by the test suite, never by the docs build.
extensions = ["myst_parser", "sphinx.ext.mathjax"]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["dollarmath", "amsmath", "deflist", "colon_fence"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**/README.md"]
suppress_warnings: list[str] = []

html_theme = "furo" if importlib.util.find_spec("furo") else "alabaster"
html_title = f"{project} {release}"
