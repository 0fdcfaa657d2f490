"""The code of docs/testing.md ("Test your implementation") runs, block after block, as a reader would run it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "testing.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_page_has_code_for_torch_jax_sweeps_and_budgets():
    blocks = python_blocks(PAGE.read_text())
    code = "\n".join(blocks)
    for needle in ("compare_torch(", "compare_jax(", "sweep_torch(", 'dtype="float32"', "params=", "functional_call"):
        assert needle in code, needle
    assert len(blocks) >= 10


def test_every_code_block_of_the_page_runs(capsys):
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    namespace: dict = {"__name__": "docs_testing_page"}
    for number, block in enumerate(python_blocks(PAGE.read_text()), 1):
        try:
            exec(compile(block, f"{PAGE.name} block {number}", "exec"), namespace)
        except Exception as err:  # name the block that broke
            raise AssertionError(f"docs/testing.md code block {number} failed: {err!r}\n{block}") from err
    assert "passed" in capsys.readouterr().out
