"""The notebooks (notebooks/*.py, jupytext py:percent) as a researcher opens them.

* Each file carries a complete jupytext header, so plain ``jupytext.read(path)`` (what
  ``jupytext --to ipynb`` and Jupyter with jupytext do) gives the same cells as the
  percent-format reading: no file is mistaken for the ``light`` format.
* Each notebook runs in a fresh kernel with matplotlib's **inline** backend, as in Jupyter,
  and every cell that calls ``plt.show()`` produces an image/png output.
* Each notebook links to its docs page and that page links back to the notebook.

The kernel is this interpreter's Python: a kernelspec named ``python3`` pointing at
``sys.executable`` is written to a temporary directory placed first on ``JUPYTER_PATH``, so
a ``python3`` kernel of some other Python on the machine can never be picked up. (``.ci/setup``
also installs the kernelspec into the virtual environment, for people who open the notebooks
in Jupyter.) ``MPLBACKEND`` is set to the inline backend for the kernel, whatever the caller
exported (``.ci/run`` exports ``Agg`` for everything else).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
TIMEOUT_S = 120
INLINE = "module://matplotlib_inline.backend_inline"
DRAWS = re.compile(r"\bplt\.(subplots|subplot|figure|plot|imshow|matshow|scatter|bar|barh|hist|pcolormesh)\(")

#: The docs page(s) each notebook teaches; every other notebook teaches docs/mechanisms/<section>.<name>.md.
PAGES = {
    "gradient_checker": ["gradient-checker.md"],
    "attention_tree": ["mechanisms/attention.tree.md", "mechanisms/embeddings.hierarchical.md",
                       "mechanisms/objectives.subtree_masking.md"],
}

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


def pages_of(path: Path) -> list[str]:
    stem = path.stem
    if stem in PAGES:
        return PAGES[stem]
    section, name = stem.split("_", 1)
    return [f"mechanisms/{section}.{name}.md"]


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A python3 kernelspec for this interpreter, first on JUPYTER_PATH, and the inline backend."""
    from ipykernel.kernelspec import write_kernel_spec

    share = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(str(share / "kernels" / "python3"))  # argv: this interpreter
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "MPLBACKEND")}
    share = str(share)
    os.environ["JUPYTER_PATH"] = share + (os.pathsep + saved["JUPYTER_PATH"] if saved["JUPYTER_PATH"] else "")
    os.environ["MPLBACKEND"] = INLINE  # what Jupyter uses; the kernel inherits it
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve(), spec.argv
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no *.py notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_header_is_complete(path):
    meta = jupytext.reads(path.read_text(), fmt="py:percent").metadata
    representation = meta.get("jupytext", {}).get("text_representation", {})
    assert representation.get("extension") == ".py", f"{path.name}: header lacks extension: .py"
    assert representation.get("format_name") == "percent", f"{path.name}: header lacks format_name: percent"
    assert representation.get("format_version"), f"{path.name}: header lacks format_version"
    assert meta.get("kernelspec", {}).get("name") == "python3", f"{path.name}: header lacks the python3 kernelspec"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_plain_read_gives_the_percent_cells(path):
    """``jupytext --to ipynb`` without a format option must split the cells at ``# %%``."""
    plain = jupytext.read(path)
    forced = jupytext.reads(path.read_text(), fmt="py:percent")
    assert plain.metadata["jupytext"]["text_representation"]["format_name"] == "percent"
    got = [(c.cell_type, c.source) for c in plain.cells]
    want = [(c.cell_type, c.source) for c in forced.cells]
    assert len(got) == len(want), f"{path.name}: {len(got)} cells read plainly, {len(want)} as py:percent"
    assert got == want
    assert sum(c.cell_type == "markdown" for c in plain.cells) >= 3, f"{path.name}: too little prose"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_and_page_link_both_ways(path):
    text = path.read_text()
    for page in pages_of(path):
        assert (ROOT / "docs" / page).is_file(), f"docs/{page} is missing"
        assert f"](../docs/{page})" in text, f"{path.name} does not link to docs/{page}"
        body = (ROOT / "docs" / page).read_text()
        back = os.path.relpath(path, (ROOT / "docs" / page).parent)  # as the repository is browsed
        assert f"]({back})" in body, f"docs/{page} does not link to notebooks/{path.name} as ({back})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_and_shows_its_figures(path, kernel_env):
    text = path.read_text()
    assert "matplotlib.use(" not in text, f"{path.name} forces a matplotlib backend"
    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(notebook, timeout=TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}", pytrace=False)
    plotting = [c for c in notebook.cells if c.cell_type == "code" and DRAWS.search(c.source)]
    for n, cell in enumerate(plotting):
        shows = cell.source.count("plt.show()")
        assert shows, f"{path.name}: a cell that plots never calls plt.show():\n{cell.source[:300]}"
        images = sum("image/png" in out.get("data", {}) for out in cell.outputs)
        assert images >= shows, (f"{path.name}: plotting cell {n} calls plt.show() {shows} times "
                                 f"but shows {images} images:\n{cell.source[:300]}")
