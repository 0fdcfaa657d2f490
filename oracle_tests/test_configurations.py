"""Configurations (issue 13): every mechanism declares one, it validates itself, every consumer takes one.

Also the command lines' usage errors and the fixture files' safety (issue 17), which go through the
same records.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from gradients.__main__ import main as gradients_main
from reference.__main__ import main as reference_main
from reference.config import Config, option
from reference.fixtures import FixtureError, export_fixture, load_fixture
from reference.registry import all_mechanisms, get

MECHANISMS = all_mechanisms()


def test_every_mechanism_declares_a_configuration() -> None:
    missing = [name for name, m in MECHANISMS.items() if m.config is None]
    assert not missing, f"mechanisms without a configuration record: {missing}"


@pytest.mark.parametrize("name", list(MECHANISMS))
def test_configuration_is_attached_and_round_trips(name: str) -> None:
    mechanism = MECHANISMS[name]
    config = mechanism.make_config()
    assert isinstance(config, mechanism.config)
    assert mechanism.make_config(config.to_dict()) == config
    for label, overrides in mechanism.edge_configs.items():
        edge = mechanism.make_config(overrides)
        assert edge != config, f"{name}: edge configuration {label!r} equals the default"


def test_unknown_field_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown LinearConfig field\(s\) n_hash; known fields: batch, seq_len"):
        get("nn.linear").make_config({"n_hash": 2})


def test_bad_value_names_the_field_and_its_range() -> None:
    with pytest.raises(ValueError, match=r"LinearConfig.d_in must be >= 1, got 0"):
        get("nn.linear").make_config({"d_in": 0})
    with pytest.raises(TypeError, match=r"LinearConfig.batch must be int, got float 2.5"):
        get("nn.linear").make_config({"batch": 2.5})
    with pytest.raises(TypeError, match=r"LinearConfig.bias must be bool"):
        get("nn.linear").make_config({"bias": 1})
    with pytest.raises(ValueError, match=r"d_model \(10\) must be a multiple of n_heads \(4\)"):
        get("nn.attention").make_config({"d_model": 10})


def test_option_constraints_and_parsing() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Toy(Config):
        size: int = option(3, "a size", minimum=1, maximum=8)
        mode: str = option("a", "a mode", choices=("a", "b"))
        rate: float = option(0.5, "a rate", minimum=0.0, maximum=1.0)
        flag: bool = option(False, "a switch")
        dims: tuple[int, ...] = option((2, 3), "sizes", minimum=1)

    assert Toy.parse(["size=4", "mode=b", "rate=1", "flag=true", "dims=5,6,7"]) == \
        {"size": 4, "mode": "b", "rate": 1.0, "flag": True, "dims": (5, 6, 7)}
    assert Toy.make({"rate": 1}).rate == 1.0 and isinstance(Toy.make({"rate": 1}).rate, float)
    assert Toy.make({"size": np.int64(5)}).size == 5
    for bad, message in (({"size": 9}, r"Toy.size must be 1 <= value <= 8, got 9"),
                         ({"mode": "c"}, r"Toy.mode must be one of 'a', 'b', got 'c'"),
                         ({"rate": float("nan")}, r"Toy.rate must be 0.0 <= value <= 1.0, got nan"),
                         ({"dims": (2, 0)}, r"Toy.dims must be >= 1, got \(2, 0\)")):
        with pytest.raises(ValueError, match=message):
            Toy.make(bad)
    with pytest.raises(ValueError, match=r"--config takes FIELD=VALUE, got 'size'"):
        Toy.parse(["size"])
    with pytest.raises(ValueError, match=r"Toy.size must be int, got 'x'"):
        Toy.parse(["size=x"])
    table = Toy.describe()
    assert "size" in table and "1 <= value <= 8" in table and "one of 'a', 'b'" in table and "True or False" in table


def test_case_carries_its_configuration_and_sizes_follow_it() -> None:
    mechanism = get("nn.attention")
    case = mechanism.example(0, config={"batch": 3, "seq_len": 33, "kv_len": 17, "d_model": 64, "n_heads": 8})
    assert case.config.n_heads == 8
    assert tuple(case.inputs["x_q"].shape) == (3, 33, 64) and tuple(case.inputs["x_kv"].shape) == (3, 17, 64)
    outputs, _ = mechanism.forward(case)
    assert tuple(outputs["y"].shape) == (3, 33, 64)


# ---------------------------------------------------------------- the command lines


def test_list_config_prints_fields(capsys) -> None:
    assert reference_main(["list", "--config", "nn.attention"]) == 0
    out = capsys.readouterr().out
    assert "n_heads" in out and ">= 1" in out and "edge configurations" in out


def test_check_at_a_configuration(capsys) -> None:
    assert gradients_main(["check", "nn.attention", "--mode", "fast", "--config", "n_heads=3",
                           "--config", "d_model=9"]) == 0
    assert "passed, 0 failed" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["check", "nn.linear", "--seed", "-1"],
    ["check", "nn.linear", "--jobs", "0"],
    ["check", "nn.linear", "--jobs", "-1"],
    ["check", "nn.nothing"],
    ["check", "nn.linear", "--config", "d_in=0"],
    ["check", "nn.linear", "--config", "nonsense=1"],
    ["check", "nn.linear", "--config", "d_in"],
    ["check", "nn.linear", "--json", "/nonexistent-dir/report.json"],
])
def test_check_usage_errors_exit_2_with_one_line(argv, capsys) -> None:
    status = _exit_status(gradients_main, argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and err.strip(), err


def _exit_status(main, argv) -> int:
    """The status ``main`` returns, or the one argparse exits with."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


@pytest.mark.parametrize("argv", [
    ["export", "nn.nothing", "--out", "OUT"],
    ["export", "nn.linear", "--out", "/proc/oracle-cannot-write-here"],
    ["export", "nn.linear", "--config", "d_in=0", "--out", "OUT"],
    ["list", "--config", "nn.nothing"],
])
def test_reference_usage_errors_exit_2(argv, tmp_path, capsys) -> None:
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert _exit_status(reference_main, argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip()
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- fixtures


def test_fixture_records_its_configuration(tmp_path) -> None:
    assert reference_main(["export", "nn.attention", "--config", "n_heads=3", "--config", "d_model=9",
                           "--out", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "nn.attention.json").read_text())
    assert meta["config"]["n_heads"] == 3 and meta["config"]["d_model"] == 9
    fixture = load_fixture("nn.attention", tmp_path)
    case = fixture.case()
    assert case.config == get("nn.attention").make_config({"n_heads": 3, "d_model": 9})
    outputs, _ = get("nn.attention").forward(case)
    np.testing.assert_array_equal(np.asarray(outputs["y"]), fixture.outputs["y"])


def test_fixture_name_cannot_escape_its_directory(tmp_path) -> None:
    inside = tmp_path / "fixtures"
    export_fixture(get("nn.linear"), tmp_path)  # a fixture outside the directory
    inside.mkdir()
    for name in ("../nn.linear", str(tmp_path / "nn.linear"), "sub/../../nn.linear"):
        with pytest.raises(FixtureError, match="escapes its directory"):
            load_fixture(name, inside)


def test_fixture_json_is_validated(tmp_path) -> None:
    npz, js = export_fixture(get("nn.linear"), tmp_path)
    meta = json.loads(js.read_text())
    js.write_text("[1, 2]")
    with pytest.raises(FixtureError, match="not a fixture's json"):
        load_fixture("nn.linear", tmp_path)
    js.write_text(json.dumps({**meta, "npz": "../elsewhere.npz"}))
    with pytest.raises(FixtureError, match="'npz' field"):
        load_fixture("nn.linear", tmp_path)


def test_unreadable_npz_is_a_fixture_error(tmp_path) -> None:
    import hashlib

    npz, js = export_fixture(get("nn.linear"), tmp_path)
    truncated = npz.read_bytes()[:100]
    npz.write_bytes(truncated)
    meta = json.loads(js.read_text())
    js.write_text(json.dumps({**meta, "sha256": hashlib.sha256(truncated).hexdigest()}))
    with pytest.raises(FixtureError, match="not a readable .npz archive"):
        load_fixture("nn.linear", tmp_path)
    assert not issubclass(FixtureError, zipfile.BadZipFile)


def test_truncated_npz_fails_its_checksum(tmp_path) -> None:
    npz, _ = export_fixture(get("nn.linear"), tmp_path)
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(FixtureError, match="sha256"):
        load_fixture(Path(npz))
