"""Sphinx configuration: MyST Markdown pages, the notebooks rendered and executed by myst-nb,
maths typeset by a MathJax copy served with the docs (no network needed to read them)."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))
sys.path.insert(0, str(DOCS / "_ext"))

from ipykernel.kernelspec import write_kernel_spec  # noqa: E402

import reference  # noqa: E402

project = "ICLR 2020 oracle"
author = "the oracle's maintainers"
copyright = "2026, " + author
version = release = reference.__version__

# myst_nb parses the Markdown pages (it brings myst_parser) and the notebooks: notebooks/*.py
# (jupytext py:percent), copied to docs/notebooks/ at each build by _ext/oracle_notebooks.py,
# which also rewrites the repository-relative links between pages and notebooks for the site.
# sphinx-mathjax-offline copies its MathJax 3 into _static/mathjax and points mathjax_path there.
extensions = ["myst_nb", "sphinx.ext.mathjax", "sphinx-mathjax-offline", "oracle_notebooks"]
myst_enable_extensions = ["dollarmath", "amsmath", "deflist", "colon_fence"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
# Executed at build time; "cache" re-executes only the notebooks whose code changed since the last
# build (jupyter-cache in docs/_build/.jupyter_cache), so a clean build (CI) runs them all once.
nb_execution_mode = "cache"
nb_execution_timeout = 120  # seconds per cell
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# The kernel: a python3 kernelspec for this interpreter, first on JUPYTER_PATH, so a python3 kernel
# of another Python on the machine is never used; and matplotlib's inline backend, as in Jupyter,
# whatever the caller exported (.ci/run exports MPLBACKEND=Agg for the tests).
# (One temporary folder per build process, removed at exit, so concurrent builds never share it.)
_share = tempfile.TemporaryDirectory(prefix="oracle-docs-jupyter-")
write_kernel_spec(os.path.join(_share.name, "kernels", "python3"))  # argv: this interpreter
os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (_share.name, os.environ.get("JUPYTER_PATH")) if p)
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"

root_doc = "index"
exclude_patterns = ["conf.py", "_build", "_ext", "Thumbs.db", ".DS_Store", "**/README.md", "**/.ipynb_checkpoints"]
suppress_warnings: list[str] = []

html_theme = "furo" if importlib.util.find_spec("furo") else "alabaster"
html_title = f"{project} {release}"
html_static_path = ["_static"]
html_css_files = ["oracle.css"]
