"""The error model's measurement (benchmarks/precision.py, docs/precision.md), small and fast.

The full sweep is not run here; these tests pin what the page's conclusions rest on: the low-precision case
is the float64 case rounded (so a data-dependent choice made in the case builder cannot differ), the causal
LSH float32 error lives in the round weights of self-only rows and ``stable_rounds`` removes it, and the
committed table covers every registered mechanism.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.precision import EXTRA_OPTIONS, lsh_round_weights, lsra_relu_bias, measure, rounded_case, run_float64
from reference.backend import to_numpy
from reference.registry import all_mechanisms

DOCS = Path(__file__).resolve().parents[1] / "docs" / "precision"


def test_rounded_case_is_the_float64_case_rounded():
    mechanism = all_mechanisms()["attention.lsh.causal"]
    case64, _, _, _ = run_float64(mechanism, mechanism.make_config())
    low = rounded_case(case64, "float32", "numpy")
    for name, value in {**case64.inputs, **case64.params}.items():
        got = to_numpy({**low.inputs, **low.params}[name])
        assert got.dtype == np.float32, name
        np.testing.assert_array_equal(got, to_numpy(value).astype(np.float32), err_msg=name)
    buckets64, buckets = to_numpy(case64.static["buckets"]), to_numpy(low.static["buckets"])
    assert buckets.dtype == buckets64.dtype
    np.testing.assert_array_equal(buckets, buckets64)


def test_complex_data_has_no_bfloat16_case():
    pytest.importorskip("torch")
    mechanism = all_mechanisms()["embeddings.complex_order.transformer"]
    case64, _, _, _ = run_float64(mechanism, mechanism.make_config())
    with pytest.raises(TypeError, match="no bfloat16 form"):
        rounded_case(case64, "bfloat16", "torch")


def test_causal_lsh_float32_error_is_the_round_weights_of_self_only_rows():
    result = lsh_round_weights("attention.lsh.causal")
    default, stable = result["default"], result["stable_rounds"]
    assert default["self_only_rows"] > 0
    # the weights of a row whose every round is self-only sum to 1 only within the float32 spacing at 1e5
    assert default["weight_sum_error_self_only"] > 1e-3 > 1e-6 > default["weight_sum_error_other"]
    assert default["error_at_self_only_positions"] > 1e-4 > 1e-6 > default["error_at_other_positions"]
    assert stable["forward_error"] < 1e-6 and stable["weight_sum_error_self_only"] < 1e-6
    assert default["loss_noise_over_eps_S"] > 100 > 10 > stable["loss_noise_over_eps_S"]


def test_lsra_case_drawn_in_bfloat16_is_another_function():
    pytest.importorskip("torch")
    row = lsra_relu_bias(seq_lens=(72,))["rows"][0]
    assert row["b_1_units_moved"] > 0
    assert row["error_own_case"] > 0.1 > 0.03 > row["error_rounded_case"]


def test_building_block_errors_are_a_few_units_in_the_last_place():
    pytest.importorskip("torch")
    rows = measure(all_mechanisms()["nn.linear"])["seq_len"]
    assert [r["size"] for r in rows] == [3, 6, 12, 24]
    for r in rows:
        assert r["float32_forward"] < 1e-6 and r["float32_backward"] < 1e-6, r
        assert r["bfloat16_forward"] < 2e-2 and r["bfloat16_backward"] < 2e-2, r


def test_committed_table_covers_every_registered_mechanism():
    measured = json.loads((DOCS / "precision.json").read_text())
    mechanisms = all_mechanisms()
    expected = {name for name, m in mechanisms.items() if m.config is not None}
    expected |= {f"{name}+{option}" for name in expected for option in EXTRA_OPTIONS
                 if getattr(mechanisms[name].make_config(), option, True) is False}
    assert expected - set(measured) == set(), "rerun python -m benchmarks.precision --out docs/precision"
    for name in ("precision_lsh.png", "outliers.json", "table.txt"):
        assert (DOCS / name).is_file(), name
