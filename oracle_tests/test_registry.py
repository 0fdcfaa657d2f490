"""The protocol every registered mechanism follows (DESIGN.md), checked over the whole registry.

For every mechanism and every backend: the backward returns a gradient for
every differentiable input and parameter, of the same namespace, dtype and
shape; the same seed gives bit-identical outputs; and the top-level mechanisms
each have a docs page and a notebook. Per-mechanism files hold the finite
differences, the torch comparisons and the paper's properties.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_array_like

from gradients.check import random_cotangents
from reference.backend import to_numpy
from reference.registry import SECTIONS, all_mechanisms

ROOT = Path(__file__).resolve().parents[1]
MECHANISMS = all_mechanisms()

#: The mechanisms of the ICLR 2020 survey (DESIGN.md); building blocks and variants are not listed here.
TOP_LEVEL = ["attention.lsra", "attention.tree", "attention.lsh", "attention.extra_hop", "objectives.electra",
             "objectives.subtree_masking", "objectives.structbert_word", "objectives.structbert_sentence",
             "objectives.entity_replacement", "embeddings.complex_order", "embeddings.hierarchical",
             "architecture.compressive", "architecture.reversible", "architecture.albert",
             "architecture.depth_adaptive"]


def test_every_mechanism_of_the_survey_is_registered():
    missing = [name for name in TOP_LEVEL if name not in MECHANISMS]
    assert not missing, f"not registered: {missing}"
    for name, mechanism in MECHANISMS.items():
        assert mechanism.section in SECTIONS and name.startswith(mechanism.section + ".")


@pytest.mark.parametrize("name", list(MECHANISMS))
def test_backward_returns_every_gradient_like_its_input(name, xp):
    mechanism = MECHANISMS[name]
    case = mechanism.example(0, xp.float64, xp)
    outputs, cache = mechanism.forward(case)
    grads = mechanism.backward(cache, random_cotangents(outputs, 0))
    assert set(grads) == set(case.differentiable), f"{name}: extra/missing {set(grads) ^ set(case.differentiable)}"
    for key, value in case.differentiable.items():
        assert_array_like(grads[key], xp=xp, dtype=value.dtype, shape=tuple(value.shape), name=f"{name}: {key}")


@pytest.mark.parametrize("name", list(MECHANISMS))
def test_same_seed_same_outputs_bit_for_bit(name):
    from reference.backend import namespace

    xp = namespace("numpy")
    mechanism = MECHANISMS[name]
    first = mechanism.run(mechanism.example(3, xp.float64, xp))
    second = mechanism.run(mechanism.example(3, xp.float64, xp))
    for key in first:
        np.testing.assert_array_equal(to_numpy(first[key]), to_numpy(second[key]), err_msg=f"{name}: {key}")
    other = mechanism.run(mechanism.example(4, xp.float64, xp))
    assert any(not np.array_equal(to_numpy(first[k]), to_numpy(other[k])) for k in first), \
        f"{name}: seeds 3 and 4 gave identical outputs; the seed does not reach the example"


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_mechanisms_have_a_docs_page_and_a_notebook(name):
    pages = {p.stem for p in (ROOT / "docs" / "mechanisms").glob("*.md")}
    # StructBERT's two objectives share one page and one notebook.
    page = "objectives.structbert" if name.startswith("objectives.structbert") else name
    assert page in pages, f"docs/mechanisms/{page}.md is missing"
    notebooks = [p.stem for p in (ROOT / "notebooks").glob("*.py")]
    stem = page.replace(".", "_")
    # Tree attention's notebook also teaches the hierarchical embeddings and the subtree mask.
    teaching = {"embeddings_hierarchical": "attention_tree", "objectives_subtree_masking": "attention_tree"}
    assert teaching.get(stem, stem) in notebooks, f"notebooks/{teaching.get(stem, stem)}.py is missing"
