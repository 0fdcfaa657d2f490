"""Golden fixtures (reference/fixtures.py) and cross-implementation comparison (gradients/compare.py)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

import reference
from gradients.check import check_mechanism, random_cotangents
from gradients.compare import compare_arrays, compare_torch, compare_with_fixture
from reference.backend import namespace
from reference.fixtures import FixtureError, FixtureIntegrityError, export_fixtures, load_fixture
from reference.registry import Case, Mechanism, get

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fixtures")
    export_fixtures(["nn.linear", "nn.embedding", "nn.dropout", "nn.gelu"], out, seed=3)
    return out


def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["nn.linear", "nn.embedding", "nn.dropout", "nn.gelu"])
def test_round_trip_reproduces_the_oracle(fixture_dir, name):
    fixture = load_fixture(name, fixture_dir)
    mechanism = get(name)
    xp = namespace("numpy")
    case = mechanism.example(3, xp.float64, xp)
    outputs, cache = mechanism.forward(case)
    cot = random_cotangents(outputs, 3)
    grads = mechanism.backward(cache, cot)
    for group, want in [("inputs", case.inputs), ("params", case.params), ("outputs", outputs),
                        ("cotangents", cot), ("grads", grads)]:
        got = getattr(fixture, group)
        assert sorted(got) == sorted(want), f"{group}: fixture has {sorted(got)}, oracle {sorted(want)}"
        for key in want:
            np.testing.assert_array_equal(got[key], np.asarray(want[key]), err_msg=f"{group}.{key}")
    for key, value in case.static.items():
        np.testing.assert_array_equal(fixture.static[key], np.asarray(value), err_msg=f"static.{key}")


def test_json_records_what_a_user_needs(fixture_dir):
    meta = json.loads((fixture_dir / "nn.linear.json").read_text())
    assert meta["mechanism"] == "nn.linear"
    assert meta["oracle_version"] == reference.__version__
    assert (meta["seed"], meta["dtype"]) == (3, "float64")
    assert meta["shapes"]["params.w"] == [5, 7] and meta["shapes"]["grads.b"] == [7]
    assert meta["sha256"] == _sha(fixture_dir / "nn.linear.npz")
    assert "(d_in, d_out)" in meta["conventions"]["weight_layout"]
    assert "dL/dRe(z) + i dL/dIm(z)" in meta["conventions"]["complex_gradient"]
    assert meta["tolerances"]["compare"]["rtol"] <= 1e-10
    embedding = json.loads((fixture_dir / "nn.embedding.json").read_text())
    assert embedding["static"] == {"ids": {"$array": "static.ids"}}
    assert embedding["dtypes"]["static.ids"] == "int64"


def test_export_is_byte_identical_from_run_to_run(fixture_dir, tmp_path):
    export_fixtures(["nn.linear"], tmp_path, seed=3)
    assert (tmp_path / "nn.linear.npz").read_bytes() == (fixture_dir / "nn.linear.npz").read_bytes()


def test_nested_and_scalar_statics_round_trip(tmp_path):
    def example(seed, dtype, xp):
        rng = np.random.default_rng(seed)
        return Case(inputs={"x": xp.asarray(rng.standard_normal((2, 3)), dtype=dtype)}, params={},
                    static={"scale": 2.5, "kind": "demo", "masks": {"a": xp.asarray([1.0, 0.0, 1.0], dtype=dtype)},
                            "pair": (xp.asarray([1, 2]), 7)})

    def forward(case):
        x, s = case.inputs["x"], case.static
        return {"y": s["scale"] * x * s["masks"]["a"]}, s

    mechanism = Mechanism("nn.fixture_test_nested", "test", "nn", example, forward,
                          lambda s, cot: {"x": s["scale"] * cot["y"] * s["masks"]["a"]})
    from reference.fixtures import export_fixture

    export_fixture(mechanism, tmp_path)
    fixture = load_fixture(tmp_path / "nn.fixture_test_nested.json")
    assert fixture.static["scale"] == 2.5 and fixture.static["kind"] == "demo"
    np.testing.assert_array_equal(fixture.static["masks"]["a"], [1.0, 0.0, 1.0])
    assert isinstance(fixture.static["pair"], tuple) and fixture.static["pair"][1] == 7
    assert compare_with_fixture(tmp_path / "nn.fixture_test_nested", mechanism).passed


def test_tampered_npz_is_refused(fixture_dir, tmp_path):
    for suffix in (".npz", ".json"):
        (tmp_path / f"nn.linear{suffix}").write_bytes((fixture_dir / f"nn.linear{suffix}").read_bytes())
    data = bytearray((tmp_path / "nn.linear.npz").read_bytes())
    data[-200] ^= 0x01  # one bit of one array's payload
    (tmp_path / "nn.linear.npz").write_bytes(bytes(data))
    with pytest.raises(FixtureIntegrityError, match="sha256"):
        load_fixture("nn.linear", tmp_path)


def test_missing_fixture_names_the_file(tmp_path):
    with pytest.raises(FixtureError, match="does not exist"):
        load_fixture("nn.nothing", tmp_path)


def test_pickled_arrays_are_never_loaded(tmp_path):
    # A file whose checksum is right but which holds an object (pickled) array.
    buffer = io.BytesIO()
    np.savez(buffer, **{"inputs.x": np.array([{"payload": 1}], dtype=object)})
    data = buffer.getvalue()
    (tmp_path / "nn.evil.npz").write_bytes(data)
    import hashlib

    meta = {"mechanism": "nn.evil", "sha256": hashlib.sha256(data).hexdigest(), "shapes": {"inputs.x": [1]}}
    (tmp_path / "nn.evil.json").write_text(json.dumps(meta))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["inputs.x.npy"]
    with pytest.raises(ValueError, match="pickle"):
        load_fixture("nn.evil", tmp_path)


def test_compare_with_fixture_accepts_the_oracle_and_catches_a_wrong_numpy_code(fixture_dir):
    assert compare_with_fixture(fixture_dir / "nn.linear.npz", get("nn.linear")).passed

    def right(inputs, params, static, cot):
        x, w, b = inputs["x"], params["w"], params["b"]
        dy = cot["y"]
        return {"y": x @ w + b}, {"x": dy @ w.T, "w": np.einsum("bti,bto->io", x, dy), "b": dy.sum((0, 1))}

    def wrong(inputs, params, static, cot):
        outputs, grads = right(inputs, params, static, cot)
        return outputs, {**grads, "w": grads["w"] * (1 + 1e-8)}

    assert compare_with_fixture(fixture_dir / "nn.linear.json", right).passed
    report = compare_with_fixture("nn.linear", wrong, directory=fixture_dir)
    assert [r.tensor for r in report.failures] == ["grads.w"], report.table()
    # An extra gradient (a misnamed key) is a named failing row, not silently ignored.
    extra = compare_with_fixture("nn.linear", lambda i, p, s, c: (right(i, p, s, c)[0],
                                                                  {**right(i, p, s, c)[1], "weight": p["w"]}),
                                 directory=fixture_dir)
    assert [r.tensor for r in extra.failures] == ["grads.weight"] and "unexpected" in extra.failures[0].note
    # Forward only: a callable returning just the outputs is compared on its outputs.
    forward_only = compare_with_fixture("nn.linear", lambda i, p, s, c: right(i, p, s, c)[0], directory=fixture_dir)
    assert forward_only.passed and [r.tensor for r in forward_only.results] == ["outputs.y"]


def _torch_linear(inputs, params, static):
    return {"y": inputs["x"] @ params["w"] + params["b"]}


def test_compare_torch_passes_a_correct_linear():
    report = compare_torch("nn.linear", _torch_linear)
    assert report.passed, report.table()
    assert [r.tensor for r in report.results] == ["outputs.y", "grads.x", "grads.w", "grads.b"]
    assert max(r.max_rel_error for r in report.results) < 1e-12


def test_compare_torch_names_the_wrong_tensor():
    def detached_bias(inputs, params, static):
        return {"y": inputs["x"] @ params["w"] + params["b"].detach()}

    report = compare_torch("nn.linear", detached_bias)
    assert [r.tensor for r in report.failures] == ["grads.b"], report.table()
    message = report.failures[0].describe()
    assert "no gradient reached params.b" in message and "functional_call" in message

    def off_by_a_little(inputs, params, static):
        return {"y": inputs["x"] @ (params["w"] * (1 + 1e-7)) + params["b"]}

    failed = {r.tensor for r in compare_torch("nn.linear", off_by_a_little).failures}
    assert {"outputs.y", "grads.x", "grads.w"} <= failed


def test_compare_torch_reports_a_missing_output():
    report = compare_torch("nn.linear", lambda i, p, s: {"z": i["x"] @ p["w"] + p["b"]})
    assert not report.passed
    assert "missing" in report.failures[0].note and report.failures[0].tensor == "outputs.y"


def test_compare_torch_converts_static_arrays():
    def embedding(inputs, params, static):
        assert isinstance(static["ids"], torch.Tensor) and static["ids"].dtype == torch.int64
        return {"y": params["table"][static["ids"]]}

    report = compare_torch("nn.embedding", embedding)
    assert report.passed, report.table()


def _complex_example(seed, dtype, xp):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))
    return Case(inputs={"z": xp.asarray(z, dtype=xp.complex128)},
                params={"w": xp.asarray(rng.standard_normal((3,)), dtype=xp.float64)})


def _complex_forward(case):
    z, w = case.inputs["z"], case.params["w"]
    return {"u": z * w, "s": (z * z.conj()).real * w}, (z, w)


def _complex_backward(cache, cot):
    # L = Re sum(conj(cu) z w) + sum(cs |z|^2 w); gradients dL/dRe + i dL/dIm.
    z, w = cache
    cu, cs = cot["u"], cot["s"]
    dz = cu * w + 2 * cs * w * z
    dw = np.sum(np.real(np.conj(cu) * z), axis=0) + np.sum(cs * np.real(z * np.conj(z)), axis=0)
    return {"z": dz, "w": dw}


COMPLEX = Mechanism("nn.complex_convention_test", "test", "nn", _complex_example, _complex_forward, _complex_backward)


def test_complex_gradient_convention_equals_torch_grad():
    # The hand-written backward above is proven by finite differences (the oracle's convention)...
    assert check_mechanism(COMPLEX).passed
    # ...and agrees with what PyTorch's autograd leaves in .grad, without any conjugation.
    report = compare_torch(COMPLEX, lambda i, p, s: {"u": i["z"] * p["w"], "s": (i["z"] * i["z"].conj()).real * p["w"]})
    assert report.passed, report.table()
    # Outputs carrying torch's lazy conjugation bit are read correctly.
    lazy = compare_torch(COMPLEX, lambda i, p, s: {"u": (i["z"].conj() * p["w"]).conj(),
                                                   "s": (i["z"] * i["z"].conj()).real * p["w"]})
    assert lazy.passed, lazy.table()
    # A conjugated gradient (JAX's convention) is caught.
    z_grad = next(r for r in report.results if r.tensor == "grads.z")
    assert z_grad.passed
    xp = namespace("numpy")
    case = COMPLEX.example(0, xp.float64, xp)
    outputs, cache = COMPLEX.forward(case)
    grads = COMPLEX.backward(cache, random_cotangents(outputs, 0))
    conjugated = compare_arrays("complex", {"z": grads["z"]}, {"z": np.conj(grads["z"])})
    assert not conjugated.passed and conjugated.failures[0].tensor == "z"


def test_compare_arrays_checks_shapes_and_discrete_values_exactly():
    expected = {"y": np.ones((2, 3)), "ids": np.array([1, 2, 3])}
    report = compare_arrays("demo", expected, {"y": np.ones((3, 2)), "ids": np.array([1, 2, 4])})
    by_name = {r.tensor: r for r in report.results}
    assert "shape (3, 2)" in by_name["y"].note and not by_name["y"].passed
    assert not by_name["ids"].passed and "(2,)" in by_name["ids"].note
    assert compare_arrays("demo", expected, {"y": np.ones((2, 3)) + 1e-13, "ids": np.array([1, 2, 3])}).passed
    bad = compare_arrays("demo", {"y": np.ones(3)}, {"y": np.array([1.0, np.nan, 1.0])})
    assert not bad.passed and bad.failures[0].note
