"""Execute every notebook (notebooks/*.py, jupytext py:percent) in a fresh kernel; each is one test.

The kernel is this interpreter's Python: a kernelspec named ``python3`` pointing
at ``sys.executable`` is written to a temporary directory placed first on
``JUPYTER_PATH``, so a ``python3`` kernel of some other Python on the machine
can never be picked up. (``.ci/setup`` also installs the kernelspec into the
virtual environment, for people who open the notebooks in Jupyter.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
TIMEOUT_S = 120

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A python3 kernelspec for this interpreter, first on JUPYTER_PATH, and a headless matplotlib."""
    from ipykernel.kernelspec import write_kernel_spec

    share = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(str(share / "kernels" / "python3"))  # argv: this interpreter
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "MPLBACKEND")}
    share = str(share)
    os.environ["JUPYTER_PATH"] = share + (os.pathsep + saved["JUPYTER_PATH"] if saved["JUPYTER_PATH"] else "")
    os.environ["MPLBACKEND"] = "Agg"
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, kernel_env):
    text = path.read_text()
    assert text.startswith("# ---\n# jupyter:"), f"{path.name} must start with the jupytext header"
    notebook = jupytext.reads(text, fmt="py:percent")
    client = nbclient.NotebookClient(notebook, timeout=TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}", pytrace=False)
