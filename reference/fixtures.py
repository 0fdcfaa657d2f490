"""Golden fixtures: every mechanism's seeded example, outputs and gradients as plain files.

``python -m reference export NAME ... --out DIR`` writes, per mechanism:

* ``NAME.npz``: arrays keyed by group and name (``inputs.x``, ``params.w``,
  ``static.mask``, ``outputs.y``, ``cotangents.y``, ``grads.x``, ``grads.w``).
  ``static.*`` holds only the array-valued static entries; arrays nested in a
  static dict, list or tuple are keyed by their path (``static.dropout.attn``,
  ``static.rotations.0``).
* ``NAME.json``: the mechanism, the oracle version, seed, dtype, shapes and
  dtypes of every array, tolerances, the conventions a user must know to
  reproduce the numbers (weight layout, complex-gradient convention, the
  scalar loss), the ``static`` entries (numbers and strings as they are,
  arrays as ``{"$array": "static.KEY"}``), and the sha256 of the npz.

The gradients are those of the scalar loss ``L = sum_k Re sum(conj(c_k) * F_k)``,
where ``F_k`` are the floating outputs and ``c_k`` the stored cotangents. So a
reimplementation in any language checks its forward against ``outputs.*`` and
its backward, fed ``cotangents.*``, against ``grads.*``.

The npz is written with a fixed timestamp, so the same oracle, seed and dtype
give byte-identical files (and the same sha256) on every run. Loading never
unpickles (``allow_pickle=False``) and refuses a file whose sha256 differs from
the one recorded in its json.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from . import __version__
from .backend import dtype_of, namespace, to_numpy
from .registry import Case, Mechanism, oracle_run, select
from .tolerances import COMPARE_TOLERANCES, TOLERANCES

__all__ = ["GROUPS", "CONVENTIONS", "Fixture", "FixtureError", "FixtureIntegrityError", "export_fixture",
           "export_fixtures", "load_fixture", "fixture_paths"]

#: The array groups of a fixture, in the order they are written.
GROUPS = ("inputs", "params", "static", "outputs", "cotangents", "grads")

#: What a user must know to reproduce the numbers (recorded in every json).
CONVENTIONS: dict[str, str] = {
    "weight_layout": "linear weights are stored (d_in, d_out) and applied as x @ w + b; "
                     "PyTorch's nn.Linear.weight is the transpose",
    "shapes": "batch-first: (batch, seq, d_model); heads (batch, heads, seq, d_head)",
    "loss": "grads.* are the gradients of L = sum_k Re(sum(conj(cotangents.k) * outputs.k)) "
            "over the floating outputs k",
    "complex_gradient": "for a complex array z the gradient is dL/dRe(z) + i dL/dIm(z), "
                        "PyTorch's .grad convention; jax.grad returns its complex conjugate",
    "randomness": "no random draw happens inside a forward pass: dropout masks, rotations, "
                  "samples and noise are the static.* arrays",
}

# A fixed zip timestamp makes exports byte-identical from run to run.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class FixtureError(ValueError):
    """A fixture file is missing, malformed, or does not match its json."""


class FixtureIntegrityError(FixtureError):
    """The npz's sha256 differs from the one recorded in the json: changed or corrupted after export."""


@dataclass
class Fixture:
    """A loaded fixture: host (NumPy) arrays by group, the json metadata, and the scalar statics."""

    name: str
    meta: dict[str, Any]
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    static: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    cotangents: dict[str, np.ndarray] = field(default_factory=dict)
    grads: dict[str, np.ndarray] = field(default_factory=dict)

    def case(self, xp: Any = None) -> Case:
        """The fixture's example as a :class:`~reference.registry.Case` on ``xp`` (NumPy by default)."""
        xp = xp or namespace("numpy")

        def move(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                return xp.asarray(value)
            if isinstance(value, (list, tuple)):
                return type(value)(move(v) for v in value)
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            return value

        config = None
        if self.meta.get("config") is not None:
            from .registry import get

            config = get(self.name).make_config(self.meta["config"])
        return Case(inputs={k: move(v) for k, v in self.inputs.items()},
                    params={k: move(v) for k, v in self.params.items()},
                    static={k: move(v) for k, v in self.static.items()}, config=config)


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, (np.generic,))


def _encode_static(value: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    """A JSON description of one static value; its arrays go to ``arrays`` under ``path``.

    Arrays become ``{"$array": "static.<path>"}``, tuples ``{"$tuple": [...]}``;
    lists, dicts, numbers, strings, booleans and None are written as they are.
    """
    if _is_array(value):
        arrays[path] = to_numpy(value)
        return {"$array": "static." + path}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"$tuple": [_encode_static(v, f"{path}.{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode_static(v, f"{path}.{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if any(not isinstance(k, str) or k.startswith("$") for k in value):
            raise TypeError(f"static[{path!r}]: dict keys must be strings not starting with '$'")
        return {k: _encode_static(v, f"{path}.{k}", arrays) for k, v in value.items()}
    raise TypeError(f"static[{path!r}]: a value of type {type(value).__name__} cannot be written to a fixture")


def _decode_static(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Undo :func:`_encode_static` with the arrays read from the npz (keys ``static.*``)."""
    if isinstance(value, dict):
        if set(value) == {"$array"}:
            return arrays[value["$array"]]
        if set(value) == {"$tuple"}:
            return tuple(_decode_static(v, arrays) for v in value["$tuple"])
        return {k: _decode_static(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_static(v, arrays) for v in value]
    return value


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed .npz with a fixed timestamp, written without pickling anything."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            array = np.asarray(array, order="C")  # (ascontiguousarray would turn 0-d into 1-d)
            if array.dtype.hasobject:
                raise TypeError(f"{key} has dtype object; fixtures hold numeric and boolean arrays only")
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_fixture(mechanism: Mechanism, out_dir: str | Path, *, seed: int = 0,
                   dtype: str = "float64", config: Any = None) -> list[Path]:
    """Write ``NAME.npz`` and ``NAME.json`` for one mechanism at ``config``; return both paths."""
    xp = namespace("numpy")
    run = oracle_run(mechanism, mechanism.example(seed, dtype_of(xp, dtype), xp, config), seed)
    case, outputs, cotangents, grads = run.case, run.outputs, run.cotangents, run.grads
    static_arrays: dict[str, np.ndarray] = {}
    static_tree = {key: _encode_static(value, key, static_arrays) for key, value in case.static.items()}

    groups = {"inputs": case.inputs, "params": case.params, "static": static_arrays, "outputs": outputs,
              "cotangents": cotangents, "grads": grads}
    arrays = {f"{group}.{key}": to_numpy(value) for group in GROUPS for key, value in groups[group].items()}
    data = _npz_bytes(arrays)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    npz_path, json_path = out / f"{mechanism.name}.npz", out / f"{mechanism.name}.json"
    npz_path.write_bytes(data)
    check_tol = {**TOLERANCES.get(dtype, TOLERANCES["float32"]), **mechanism.tolerances.get(dtype, {})}
    meta = {
        "mechanism": mechanism.name,
        "paper": mechanism.paper,
        "section": mechanism.section,
        "oracle_version": __version__,
        "seed": seed,
        "dtype": dtype,
        "backend": "numpy",
        "npz": npz_path.name,
        "sha256": _sha256(data),
        "shapes": {key: list(a.shape) for key, a in arrays.items()},
        "dtypes": {key: str(a.dtype) for key, a in arrays.items()},
        "config": None if case.config is None else case.config.to_dict(),
        "static": static_tree,
        "tolerances": {"compare": COMPARE_TOLERANCES[dtype], "gradient_check": check_tol},
        "conventions": CONVENTIONS,
    }
    json_path.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return [npz_path, json_path]


def export_fixtures(names: Iterable[str] | None, out_dir: str | Path, *, seed: int = 0,
                    dtype: str = "float64", config: Any = None) -> list[Path]:
    """Export every named mechanism (a name also selects its variants; all when empty).

    ``config`` (a dict of fields) applies to every selected mechanism, so it is meant for one
    mechanism and its variants; each validates it and names a field it does not know.
    """
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    paths: list[Path] = []
    for mechanism in select(list(names or [])):
        paths.extend(export_fixture(mechanism, out_dir, seed=seed, dtype=dtype, config=config))
    return paths


def fixture_paths(path_or_name: str | Path, directory: str | Path | None = None) -> tuple[Path, Path]:
    """(npz, json) paths for a mechanism name in ``directory``, or for a path to either file or their stem.

    With ``directory``, the name must stay inside it: ``"../x"`` or an absolute path is a FixtureError.
    """
    text = str(path_or_name)
    for suffix in (".npz", ".json"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    if directory is not None:
        root = Path(directory).resolve()
        base = (root / text).resolve()
        if Path(text).is_absolute() or root not in base.parents:
            raise FixtureError(f"fixture name {str(path_or_name)!r} escapes its directory {str(directory)!r}: "
                               "pass a mechanism name such as 'nn.linear'")
    else:
        base = Path(text)
    return base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")


def load_fixture(path_or_name: str | Path, directory: str | Path | None = None) -> Fixture:
    """Load a fixture, verifying its sha256 and never unpickling.

    ``path_or_name``: a mechanism name (with ``directory``, inside which it must stay), or a path to
    the ``.npz``, the ``.json`` or their common stem. Raises :class:`FixtureIntegrityError` when the
    npz does not match the json's sha256, :class:`FixtureError` when a file is missing, the json is
    not a fixture's, the npz is not a readable archive, or the arrays disagree with the json.

    The sha256 guards against accidents (a truncated download, a file edited or re-exported by
    mistake), not against someone who can edit both files: to pin a set of fixtures against
    tampering, keep your own manifest of their checksums (``sha256sum *.npz *.json``) where the
    fixtures' writer cannot change it, and compare before loading.
    """
    npz_path, json_path = fixture_paths(path_or_name, directory)
    if not json_path.is_file():
        raise FixtureError(f"fixture file {json_path} does not exist (export it with "
                           f"`python -m reference export NAME --out DIR`)")
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FixtureError(f"{json_path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) or \
            not isinstance(meta.get("shapes"), dict):
        raise FixtureError(f"{json_path} is not a fixture's json (expected an object with 'sha256' and 'shapes', "
                           f"got {type(meta).__name__})")
    recorded = meta.get("npz", npz_path.name)
    if not isinstance(recorded, str) or Path(recorded).name != recorded or recorded != npz_path.name:
        raise FixtureError(f"{json_path}: its 'npz' field {recorded!r} must name the file beside it, {npz_path.name!r}")
    if not npz_path.is_file():
        raise FixtureError(f"fixture file {npz_path} does not exist (export it with "
                           f"`python -m reference export NAME --out DIR`)")
    data = npz_path.read_bytes()
    expected, actual = meta.get("sha256"), _sha256(data)
    if expected != actual:
        raise FixtureIntegrityError(
            f"{npz_path} does not match the sha256 recorded in {json_path.name}: expected {expected}, "
            f"got {actual}. The file was changed or corrupted after export; re-export it.")
    fixture = Fixture(name=meta.get("mechanism", npz_path.stem), meta=meta)
    shapes = meta.get("shapes", {})
    static_arrays: dict[str, np.ndarray] = {}
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise FixtureError(f"{npz_path} is not a readable .npz archive: {err}") from None
    with archive as npz:
        keys = list(npz.files)
        if sorted(keys) != sorted(shapes):
            raise FixtureError(f"{npz_path} holds arrays {sorted(keys)}, its json lists {sorted(shapes)}")
        for key in keys:
            group, _, name = key.partition(".")
            if group not in GROUPS or not name:
                raise FixtureError(f"{npz_path}: unexpected array key {key!r} (groups are {GROUPS})")
            array = npz[key]  # a pickled (object) array raises ValueError here: allow_pickle=False
            if list(array.shape) != list(shapes[key]):
                raise FixtureError(f"{npz_path}: {key} has shape {array.shape}, json says {tuple(shapes[key])}")
            if group == "static":
                static_arrays[key] = array
            else:
                getattr(fixture, group)[name] = array
    try:
        fixture.static = {k: _decode_static(v, static_arrays) for k, v in meta.get("static", {}).items()}
    except KeyError as err:
        raise FixtureError(f"{json_path}: static refers to array {err.args[0]!r}, absent from {npz_path.name}") from None
    return fixture
