"""The error model: how the oracle's own float32 and bfloat16 error grows with each mechanism's main size.

``python -m benchmarks.precision [--only NAME ...] [--out docs/precision] [--outliers | --replot]`` runs, for every
registered mechanism, its forward and backward at each main size its configuration has (``SIZE_FIELDS``:
sequence length, tree leaves, depth, hash rounds, width) times 1, 2, 4 and 8, in float64 (NumPy), float32
(NumPy) and bfloat16 (torch through array-api-compat, on cuda where present). The low-precision case is the
float64 case rounded: every input, parameter and floating static array is cast from the float64 case, and
integer and boolean static data (hash buckets, masks, token ids) are the float64 case's own. So the
measurement is the arithmetic's error alone, the yardstick ``gradients.compare`` uses; a case built from the
seed in low precision makes its data-dependent choices (hash buckets, ReLU margins) in that precision and
is a different function (see ``--outliers``). The errors, against float64:

* forward: max over outputs of max |y - y64| / max |y64|;
* backward: max over differentiable tensors of max |g - g64| / max(max |g64|, 1e-3 largest gradient), with
  the float64 cotangents rounded.

Configuration fields ending in ``_margin`` are set to 0 (margins are for the gradient check), and a size the
configuration rejects is skipped. A mechanism with a ``stable_rounds`` option is measured a second time with
it on, as ``NAME+stable_rounds``. Complex arrays have no bfloat16 form in torch; those rows say so.

It writes ``precision.json``, ``table.txt`` (the Markdown table docs/precision.md includes) and PNGs into
``--out``; ``--outliers`` runs the targeted measurements that explain the outliers on docs/precision.md and
writes ``outliers.json``; ``--replot`` redraws the table and plots from ``precision.json``. About a minute on two
loaded cores (the outliers 10 s); CI runs ``oracle_tests/test_precision_quick.py`` instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from reference.backend import dtype_of, from_numpy, namespace, to_numpy
from reference.random import random_cotangents
from reference.registry import Case, Mechanism, all_mechanisms

#: The sizes swept, each that a mechanism's configuration has: sequence length, tree leaves (``trees``: a batch
#: of three generated trees of 8, 16, 32, 64 leaves), depth, hash rounds, width (model, hidden, per head, per
#: embedding dimension).
SIZE_FIELDS = ("seq_len", "trees", "n_layers", "n_hashes", "d_model", "hidden", "d_head", "dim")
#: As in the gradient checker: a tensor's error is relative to its own largest value, but never to less than
#: a thousandth of the largest gradient of the mechanism (a key bias's gradient is zero by structure).
REL_FLOOR = 1e-3
FACTORS = (1, 2, 4, 8)
PRECISIONS = (("float32", "numpy"), ("bfloat16", "torch"))
#: Options measured a second time switched on, where a configuration has them (NAME+option).
EXTRA_OPTIONS = ("stable_rounds",)
EPS32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff 2^-24


# ---------------------------------------------------------------------------------------------- the case

def _map_arrays(value: Any, fn: Callable[[Any], Any]) -> Any:
    if hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, np.generic):
        return fn(value)
    if isinstance(value, (list, tuple)):
        items = [_map_arrays(v, fn) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        return {k: _map_arrays(v, fn) for k, v in value.items()}
    return value


def rounded_case(case64: Case, dtype: str, backend: str) -> Case:
    """The float64 case on ``backend``, floating arrays rounded to ``dtype``, the rest unchanged."""
    xp = namespace(backend)
    low = dtype_of(xp, dtype)

    def cast(a: Any) -> Any:
        host = np.asarray(to_numpy(a))
        if host.dtype.kind == "c":
            if dtype != "float32":
                raise TypeError(f"complex arrays have no {dtype} form")
            return from_numpy(host, xp, dtype_of(xp, "complex64"))
        return from_numpy(host, xp, low if host.dtype.kind == "f" else None)

    return dataclasses.replace(case64, inputs=_map_arrays(case64.inputs, cast),
                               params=_map_arrays(case64.params, cast), static=_map_arrays(case64.static, cast))


def _floating(outputs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in outputs.items() if np.asarray(to_numpy(v)).dtype.kind in "fc"}


def _host(d: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(to_numpy(v)).astype(np.complex128 if np.asarray(to_numpy(v)).dtype.kind == "c"
                                              else np.float64) for k, v in d.items()}


def _rel(low: np.ndarray, ref: np.ndarray, floor: float = 0.0) -> float:
    scale = max(float(np.max(np.abs(ref))) if ref.size else 0.0, floor)
    return float(np.max(np.abs(low - ref)) / scale) if scale > 0 and ref.size else 0.0


def _largest(arrays: dict[str, np.ndarray]) -> float:
    return max([float(np.max(np.abs(g))) for g in arrays.values() if g.size] or [0.0])


def _worst(low: dict[str, np.ndarray], ref: dict[str, np.ndarray], floor: float = 0.0) -> tuple[float, str]:
    errors = {k: _rel(low[k], ref[k], floor) for k in ref}
    name = max(errors, key=errors.get)
    return errors[name], name


def run_float64(mechanism: Mechanism, config: Any) -> tuple[Case, dict, dict, dict]:
    """The float64 case, its outputs, the seeded cotangents and the gradients (host arrays)."""
    case = mechanism.example(0, np.float64, namespace("numpy"), config)
    outputs, cache = mechanism.forward(case)
    outputs = _floating(outputs)
    cot = random_cotangents(outputs, 0)
    grads = mechanism.backward(cache, cot)
    return case, _host(outputs), _host(cot), _host(grads)


def run_low(mechanism: Mechanism, case: Case, dtype: str, backend: str, cot64: dict[str, np.ndarray]):
    """Outputs and gradients (host, float64) of ``case`` (already in ``dtype``) with the rounded cotangents."""
    xp = namespace(backend)
    outputs, cache = mechanism.forward(case)
    outputs = _floating(outputs)
    cot = {k: from_numpy(c, xp, outputs[k].dtype) for k, c in cot64.items()}
    return _host(outputs), _host(mechanism.backward(cache, cot))


# ---------------------------------------------------------------------------------------------- the sweep

def measure(mechanism: Mechanism, options: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """{size field: rows}: errors of float32 and bfloat16 against float64 at that size times each of FACTORS."""
    if mechanism.config is None:
        return {}
    base = mechanism.make_config(None, **(options or {}))
    return {f: rows for f in SIZE_FIELDS if hasattr(base, f) for rows in [_sweep(mechanism, base, f)] if rows}


def _scaled(base: Any, field: str, factor: int) -> tuple[Any, int]:
    """The field's value at ``factor`` times the base size, and that size (for trees: leaves per tree)."""
    if field == "trees":
        half = 4 * factor
        return tuple(f"(S (NP {' '.join(f'w{b}x{j}' for j in range(half))}) "
                     f"(VP (NP {' '.join(f'u{b}x{j}' for j in range(half))})))" for b in range(3)), 2 * half
    return getattr(base, field) * factor, getattr(base, field) * factor


def _sweep(mechanism: Mechanism, base: Any, field: str) -> list[dict[str, Any]]:
    # Margins (hash_margin, ...) exist for the gradient check's finite differences; here they only limit the sizes.
    no_margins = {f: 0.0 for f in vars(base) if f.endswith("_margin")}
    rows = []
    for factor in FACTORS:
        value, size = _scaled(base, field, factor)
        try:
            config = mechanism.make_config(base, **{field: value, **no_margins})
            case64, out64, cot64, grads64 = run_float64(mechanism, config)
        except (ValueError, TypeError):  # not a valid configuration at this size
            continue
        row: dict[str, Any] = {"size": size}
        largest = _largest(grads64)
        floor = REL_FLOOR * largest
        for dtype, backend in PRECISIONS:
            try:
                outputs, grads = run_low(mechanism, rounded_case(case64, dtype, backend), dtype, backend, cot64)
            except TypeError as err:  # complex data in bfloat16
                row[f"{dtype}_error"] = str(err)
                continue
            row[f"{dtype}_forward"], row[f"{dtype}_forward_worst"] = _worst(outputs, out64)
            row[f"{dtype}_backward"], row[f"{dtype}_backward_worst"] = _worst(grads, grads64, floor)
            worst64 = grads64[row[f"{dtype}_backward_worst"]]
            row[f"{dtype}_backward_worst_size"] = float(np.max(np.abs(worst64))) / largest if largest else 0.0
        rows.append(row)
    return rows


def measure_all(only: list[str]) -> dict[str, Any]:
    results = {}
    for name, mechanism in all_mechanisms().items():
        if only and not any(name == n or name.startswith(n + ".") for n in only):
            continue
        t = time.perf_counter()
        defaults = mechanism.make_config() if mechanism.config is not None else None
        variants = [(name, {})] + [(f"{name}+{o}", {o: True}) for o in EXTRA_OPTIONS
                                   if getattr(defaults, o, True) is False]
        for label, options in variants:
            result = measure(mechanism, options)
            if result:
                results[label] = result
        print(f"{name}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    return results


# ---------------------------------------------------------------------------------------------- the outliers

def _lsh_config(**changes: Any) -> dict[str, Any]:
    return {"hash_margin": 0.0, **changes}


#: The configuration of issue 15.4 (B=2, L=256, D=64, 2 heads, 4 rounds, 8 buckets, chunk 32).
ISSUE_LSH = {"batch": 2, "seq_len": 256, "d_model": 64, "n_heads": 2, "n_hashes": 4, "n_buckets": 8,
             "chunk_len": 32, "d_k": 32, "d_v": 32}


def lsh_round_weights(name: str, **changes: Any) -> dict[str, Any]:
    """float32 LSH: error, rows whose every round is self-only, the round weights' sum there, loss noise."""
    mechanism = all_mechanisms()[name]
    result = {}
    for stable in (False, True):
        config = mechanism.make_config(None, **_lsh_config(**changes, stable_rounds=stable))
        case64, out64, cot64, _ = run_float64(mechanism, config)
        low = rounded_case(case64, "float32", "numpy")
        outputs, cache = mechanism.forward(low)
        lam = to_numpy(cache.rounds.lam)  # (B, H, R, L) per-round log-sum-exps
        weight_sum = to_numpy(cache.rounds.omega).astype(np.float64).sum(axis=2)  # (B, H, L)
        self_only = np.all(lam < -0.5e5, axis=2)  # (B, H, L): lam = z_ii - 1e5 in every round
        y64, y32 = out64["y"], to_numpy(outputs["y"]).astype(np.float64)
        loss64, loss32 = float(np.sum(cot64["y"] * y64)), float(np.sum(cot64["y"] * y32))
        hit, scale = np.any(self_only, axis=1), float(np.abs(y64).max())  # (B, L) positions with such a head
        result["stable_rounds" if stable else "default"] = {
            "forward_error": _rel(y32, y64),
            "self_only_rows": int(self_only.sum()), "rows": int(self_only.size),
            "weight_sum_error_self_only": float(np.abs(weight_sum - 1)[self_only].max()) if self_only.any() else 0.0,
            "weight_sum_error_other": float(np.abs(weight_sum - 1)[~self_only].max()),
            "error_at_self_only_positions": _rel(y32[hit], y64[hit], scale) if hit.any() else 0.0,
            "error_at_other_positions": _rel(y32[~hit], y64[~hit], scale),
            "loss_noise_over_eps_S": abs(loss32 - loss64) / (EPS32 * float(np.sum(np.abs(cot64["y"] * y64)))),
        }
    return result


def lsh_bfloat16_buckets(name: str) -> dict[str, Any]:
    """bfloat16 LSH: buckets hashed in bfloat16 against float64, and the error with each set of buckets."""
    mechanism = all_mechanisms()[name]
    config = mechanism.make_config(None, **_lsh_config(stable_rounds=True))
    case64, out64, cot64, _ = run_float64(mechanism, config)
    xp = namespace("torch")
    own = mechanism.example(0, dtype_of(xp, "bfloat16"), xp, config)  # hashed in bfloat16
    with_own = dataclasses.replace(rounded_case(case64, "bfloat16", "torch"), static=own.static)
    flips = int(np.sum(to_numpy(own.static["buckets"]) != to_numpy(case64.static["buckets"])))
    errors = {}
    for label, case in (("float64_buckets", rounded_case(case64, "bfloat16", "torch")), ("bfloat16_buckets", with_own)):
        outputs, _ = run_low(mechanism, case, "bfloat16", "torch", cot64)
        errors[label] = _rel(outputs["y"], out64["y"])
    return {"bucket_flips": flips, "buckets": int(np.asarray(to_numpy(own.static["buckets"])).size), **errors}


def lsra_relu_bias(seq_lens: tuple[int, ...] = (9, 18, 36, 72)) -> dict[str, Any]:
    """LSRA: the FFN bias chosen by a case built in bfloat16 against the float64 one, and the error of each."""
    mechanism = all_mechanisms()["attention.lsra"]
    xp = namespace("torch")
    rows = []
    for seq_len in seq_lens:
        config = mechanism.make_config(None, seq_len=seq_len)
        case64, out64, cot64, _ = run_float64(mechanism, config)
        own = mechanism.example(0, dtype_of(xp, "bfloat16"), xp, config)
        b64, b16 = to_numpy(case64.params["b_1"]), to_numpy(own.params["b_1"]).astype(np.float64)
        rounded_out, _ = run_low(mechanism, rounded_case(case64, "bfloat16", "torch"), "bfloat16", "torch", cot64)
        own_out, _ = run_low(mechanism, own, "bfloat16", "torch", cot64)
        moved = np.abs(b16 - b64) > 0.02 * np.abs(b64).max()  # (F,) more than bfloat16 rounding (0.4 %) explains
        rows.append({"seq_len": seq_len, "b_1_units_moved": int(moved.sum()), "b_1_units": int(b64.size),
                     "b_1_rel_diff": _rel(b16, b64), "error_own_case": _rel(own_out["y"], out64["y"]),
                     "error_rounded_case": _rel(rounded_out["y"], out64["y"])})
    return {"rows": rows}


def albert_sop(name: str, **changes: Any) -> dict[str, Any]:
    """ALBERT float32: the SOP logits' error, the pooled vector's, and the cancellation in their last product."""
    mechanism = all_mechanisms()[name]
    config = mechanism.make_config(None, **changes)
    case64, out64, _, _ = run_float64(mechanism, config)
    _, cache64 = mechanism.forward(case64)
    outputs, cache = mechanism.forward(rounded_case(case64, "float32", "numpy"))
    p64, p32 = to_numpy(cache64.sop.x), to_numpy(cache.sop.x).astype(np.float64)  # (B, hidden) pooled
    w, b = to_numpy(case64.params["sop_w"]), to_numpy(case64.params["sop_b"])
    s64 = out64["sop_logits"]
    terms = np.abs(p64) @ np.abs(w) + np.abs(b)  # (B, 2) sum of |terms| of each logit
    own, _ = mechanism.forward(mechanism.example(0, np.float32, namespace("numpy"), config))  # drawn in float32
    return {"sop_error": _rel(to_numpy(outputs["sop_logits"]).astype(np.float64), s64),
            "sop_error_case_drawn_in_float32": _rel(to_numpy(own["sop_logits"]).astype(np.float64), s64),
            "h_error": _rel(to_numpy(outputs["h"]).astype(np.float64), out64["h"]),
            "pooled_error": _rel(p32, p64),
            "pooled_error_through_float64_product": _rel(p32 @ w + b, s64),
            "max_abs_logit": float(np.abs(s64).max()), "max_sum_abs_terms": float(terms.max())}


def complex_order_phase(name: str = "embeddings.complex_order", seq_lens: tuple[int, ...] = (5, 10, 20, 40)):
    """Complex order: the largest phase argument and the float32 error of the embedding at each length."""
    mechanism = all_mechanisms()[name]
    rows = []
    for seq_len in seq_lens:
        config = mechanism.make_config(None, seq_len=seq_len)
        case64, out64, _, _ = run_float64(mechanism, config)
        outputs, _ = mechanism.forward(rounded_case(case64, "float32", "numpy"))
        outputs = _host(_floating(outputs))
        rows.append({"seq_len": seq_len, "forward_error": _worst(outputs, out64)[0],
                     "max_phase": _max_phase(case64, config)})
    return {"rows": rows}


def _max_phase(case: Case, config: Any) -> float:
    """max |omega_j p + theta_j| over positions p (the argument of the embedding's cos and sin)."""
    freq = [v for k, v in case.params.items() if "freq" in k or "omega" in k]
    phase = [v for k, v in case.params.items() if "phase" in k or "theta" in k]
    positions = np.asarray(to_numpy(case.static.get("positions", np.arange(config.seq_len)))).max()
    w = max(float(np.abs(to_numpy(f)).max()) for f in freq) if freq else 0.0
    t = max(float(np.abs(to_numpy(p)).max()) for p in phase) if phase else 0.0
    return w * float(positions) + t


def _fields_named(cache: Any, field: str, path: str = "") -> dict[str, Any]:
    """{path: array} of every cache field called ``field`` (LayerNorm's inv_std, a layer's ln2.xhat)."""
    found: dict[str, Any] = {}
    if hasattr(cache, "_fields"):
        for f in cache._fields:
            v = getattr(cache, f)
            if f == field and hasattr(v, "shape"):
                found[f"{path}.{f}"] = v
            else:
                found.update(_fields_named(v, field, f"{path}.{f}"))
    elif isinstance(cache, dict):
        for k, v in cache.items():
            found.update(_fields_named(v, field, f"{path}[{k}]"))
    elif isinstance(cache, (list, tuple)):
        for i, v in enumerate(cache):
            found.update(_fields_named(v, field, f"{path}[{i}]"))
    return found


def _attr(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def layer_norm_amplification(name: str, field: str, sizes: tuple[int, ...], head_input: str = "") -> dict[str, Any]:
    """The largest 1/std of any LayerNorm row (float64) and the forward errors, at each size."""
    mechanism = all_mechanisms()[name]
    rows = []
    for size in sizes:
        config = mechanism.make_config(None, **{field: size})
        case64, out64, cot64, _ = run_float64(mechanism, config)
        _, cache = mechanism.forward(case64)
        inv_std = {k: float(np.max(to_numpy(v))) for k, v in _fields_named(cache, "inv_std").items()}
        site = max(inv_std, key=inv_std.get)
        row = {field: size, "max_inv_std": inv_std[site], "site": site,
               "median_inv_std_there": float(np.median(to_numpy(_fields_named(cache, "inv_std")[site])))}
        for dtype, backend in PRECISIONS:
            low = rounded_case(case64, dtype, backend)
            outputs, _ = run_low(mechanism, low, dtype, backend, cot64)
            row[f"{dtype}_forward"], row[f"{dtype}_worst"] = _worst(outputs, out64)
            if head_input:  # the LayerNorm's input side: the head's first linear layer's input
                _, low_cache = mechanism.forward(low)
                row[f"{dtype}_head_input"] = _rel(_host({"x": _attr(low_cache, head_input)})["x"],
                                                  _host({"x": _attr(cache, head_input)})["x"])
        rows.append(row)
    return {"rows": rows}


def depth_trace(name: str, n_layers: int) -> dict[str, Any]:
    """float32 error of every layer's output (its second LayerNorm's normalised value) against float64."""
    mechanism = all_mechanisms()[name]
    config = mechanism.make_config(None, n_layers=n_layers)
    case64, _, _, _ = run_float64(mechanism, config)
    _, cache64 = mechanism.forward(case64)
    _, cache = mechanism.forward(rounded_case(case64, "float32", "numpy"))
    low = _fields_named(cache, "xhat")
    return {k: _rel(to_numpy(low[k]).astype(np.float64), to_numpy(v))
            for k, v in _fields_named(cache64, "xhat").items() if ".ln2." in k}


def residual_depth(name: str = "architecture.reversible", depths: tuple[int, ...] = (3, 6, 12, 24)) -> dict[str, Any]:
    """float32: the largest output and its absolute and relative error at each depth (no per-layer cache)."""
    mechanism = all_mechanisms()[name]
    rows = []
    for n in depths:
        case64, out64, cot64, _ = run_float64(mechanism, mechanism.make_config(None, n_layers=n))
        outputs, _ = run_low(mechanism, rounded_case(case64, "float32", "numpy"), "float32", "numpy", cot64)
        error, worst = _worst(outputs, out64)
        scale = float(np.max(np.abs(out64[worst])))
        rows.append({"n_layers": n, "output": worst, "max_abs_output": scale, "abs_error": error * scale,
                     "forward_error": error})
    return {"rows": rows}


def reversible_lsh_stable(n_layers: tuple[int, ...] = (2, 16)) -> dict[str, Any]:
    """architecture.reversible.lsh with every layer's LSH round weights in the stable form.

    The stack has no ``stable_rounds`` option; this diagnostic passes it to each layer's
    ``lsh_attention_forward`` for the duration of the measurement.
    """
    import functools

    from reference.architecture import reversible_blocks

    mechanism = all_mechanisms()["architecture.reversible.lsh"]
    original = reversible_blocks.lsh_attention_forward
    result = {}
    try:
        for stable in (False, True):
            reversible_blocks.lsh_attention_forward = (functools.partial(original, stable_rounds=True) if stable
                                                       else original)
            for n in n_layers:
                config = mechanism.make_config(None, n_layers=n, hash_margin=0.0)
                case64, out64, cot64, grads64 = run_float64(mechanism, config)
                floor = REL_FLOOR * _largest(grads64)
                for dtype, backend in PRECISIONS:
                    outputs, grads = run_low(mechanism, rounded_case(case64, dtype, backend), dtype, backend, cot64)
                    result[f"{'stable_rounds' if stable else 'default'} n_layers={n} {dtype}"] = {
                        "forward": _worst(outputs, out64)[0], "backward": _worst(grads, grads64, floor)[0]}
    finally:
        reversible_blocks.lsh_attention_forward = original
    return result


def per_tensor_backward(name: str, dtype: str = "bfloat16", backend: str = "torch") -> dict[str, Any]:
    """Each gradient's error (on the backward's scale) and its float64 size relative to the largest gradient."""
    mechanism = all_mechanisms()[name]
    case64, _, cot64, grads64 = run_float64(mechanism, mechanism.make_config())
    _, grads = run_low(mechanism, rounded_case(case64, dtype, backend), dtype, backend, cot64)
    largest = _largest(grads64)
    return {k: {"error": _rel(grads[k], g, REL_FLOOR * largest), "size": float(np.max(np.abs(g))) / largest}
            for k, g in grads64.items()}


def outliers() -> dict[str, Any]:
    return {
        "lsh_round_weights": {
            "attention.lsh": lsh_round_weights("attention.lsh"),
            "attention.lsh.causal": lsh_round_weights("attention.lsh.causal"),
            "attention.lsh.padded": lsh_round_weights("attention.lsh.padded"),
            "attention.lsh.causal at issue 15.4": lsh_round_weights("attention.lsh.causal", **ISSUE_LSH),
            "attention.lsh seq_len=32": lsh_round_weights("attention.lsh", seq_len=32),
            "attention.lsh.dense d_model=72": lsh_round_weights("attention.lsh.dense", d_model=72),
        },
        "lsh_bfloat16_buckets": {n: lsh_bfloat16_buckets(n) for n in ("attention.lsh", "attention.lsh.causal")},
        "lsra_relu_bias": lsra_relu_bias(),
        "albert_sop": {"architecture.albert.ffn_shared": albert_sop("architecture.albert.ffn_shared"),
                       "architecture.albert.not_shared n_layers=32": albert_sop("architecture.albert.not_shared",
                                                                                n_layers=32),
                       "architecture.albert": albert_sop("architecture.albert")},
        "complex_order_phase": complex_order_phase(),
        "layer_norm_amplification": {
            "objectives.electra.generator": layer_norm_amplification("objectives.electra.generator", "n_layers",
                                                                     (1, 2, 4, 8), head_input="head.dense.x"),
            "nn.mlm_head": layer_norm_amplification("nn.mlm_head", "seq_len", (5, 10, 20, 40)),
        },
        "depth_trace architecture.albert.attention_shared n_layers=16":
            depth_trace("architecture.albert.attention_shared", 16),
        "depth_trace objectives.entity_replacement n_layers=8": depth_trace("objectives.entity_replacement", 8),
        "reversible_lsh_stable": reversible_lsh_stable(),
        "residual_depth architecture.reversible": residual_depth(),
        "per_tensor_backward nn.attention bfloat16": per_tensor_backward("nn.attention"),
        "per_tensor_backward nn.attention float32": per_tensor_backward("nn.attention", "float32", "numpy"),
    }


# ---------------------------------------------------------------------------------------------- the report

def _table(results: dict[str, Any]) -> str:
    lines = ["| mechanism | size field | sizes | float32 forward | float32 backward | bfloat16 forward | "
             "bfloat16 backward |", "|---|---|---|---|---|---|---|"]

    def span(rows: list[dict[str, Any]], key: str) -> str:
        values = [r[key] for r in rows if key in r]
        if not values:
            errors = [r[key.split("_")[0] + "_error"] for r in rows if key.split("_")[0] + "_error" in r]
            return f"n/a ({errors[0]})" if errors else "-"
        return f"{values[0]:.1e} → {values[-1]:.1e}" if len(values) > 1 else f"{values[0]:.1e}"

    for name, sweeps in results.items():
        for field, rows in sweeps.items():
            sizes = ", ".join(str(r["size"]) for r in rows)
            lines.append(f"| `{name}` | `{field}` | {sizes} | " + " | ".join(
                span(rows, f"{d}_{p}") for d, _ in PRECISIONS for p in ("forward", "backward")) + " |")
    return "\n".join(lines) + "\n"


#: Line style of each size field in the plots.
FIELD_STYLES = {"seq_len": "-", "trees": "-", "n_layers": "--", "n_hashes": ":", "d_model": "-.",
                "hidden": "-.", "d_head": "-.", "dim": "-."}
FIELD_LABELS = {"-": "length (seq_len, tree leaves)", "--": "depth (n_layers)", ":": "hash rounds (n_hashes)",
                "-.": "width (d_model, hidden, ...)"}


LSH_NAMES = ("attention.lsh", "architecture.reversible.lsh")


def _family(name: str) -> str:
    return ".".join(name.split("+")[0].split(".")[:2])


def _curves(results: dict[str, Any], names: list[str], dtype: str, part: str) -> dict[tuple[str, str], list]:
    """{(family, field): [(factor, worst error over the family's variants)]}."""
    curves: dict[tuple[str, str], dict[int, float]] = {}
    for name in names:
        for field, rows in results[name].items():
            points = curves.setdefault((_family(name), field), {})
            for r in rows:
                value = r.get(f"{dtype}_{part}")
                if value is not None and value > 0:
                    factor = round(r["size"] / rows[0]["size"])
                    points[factor] = max(points.get(factor, 0.0), value)
    return {k: sorted(v.items()) for k, v in curves.items() if v}


def _figure(plt: Any, title: str, draw: Callable[[Any, str, str], None], path: Path, legend: list,
            xlabel: str = "main size / default size") -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 6.8), sharex=True)
    for i, dtype in enumerate(("float32", "bfloat16")):
        for j, part in enumerate(("forward", "backward")):
            ax = axes[i][j]
            draw(ax, dtype, part)
            low, high = ax.get_ylim()  # whole decades, so that every panel has at least two labelled ticks
            if 0 < low < high:
                ax.set_ylim(10 ** math.floor(math.log10(low)), 10 ** math.ceil(math.log10(high)))
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(FACTORS, [str(f) for f in FACTORS])
            ax.minorticks_off()
            ax.set_title(f"{dtype} {part}", fontsize=11)
            ax.tick_params(labelsize=9)
            ax.grid(True, which="major", alpha=0.3)
            if i == 1:
                ax.set_xlabel(xlabel, fontsize=10)
            if j == 0:
                ax.set_ylabel("max error / max |float64|", fontsize=10)
    fig.suptitle(title, fontsize=12)
    fig.legend(handles=legend, fontsize=9, loc="center left", bbox_to_anchor=(0.76, 0.5), frameon=False)
    fig.tight_layout(rect=(0, 0, 0.76, 0.96))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    written = []
    for section in sorted({name.split(".")[0] for name in results}):
        # LSH: the stable_rounds rows here (the round-weight outlier has its own figure, precision_lsh.png)
        names = [n for n in results if n.split(".")[0] == section
                 and (("+" in n) if n.startswith(LSH_NAMES) else ("+" not in n))]
        families = sorted({_family(n) for n in names})
        colours = {f: plt.cm.tab20(k % 20) if len(families) > 10 else plt.cm.tab10(k % 10)
                   for k, f in enumerate(families)}

        def draw(ax: Any, dtype: str, part: str, names: list[str] = names, colours: dict = colours) -> None:
            for (family, field), pts in _curves(results, names, dtype, part).items():
                ax.plot(*zip(*pts), FIELD_STYLES[field], color=colours[family], marker=".", linewidth=1.2)

        stable = {_family(n) for n in names if "+" in n}
        legend = ([Line2D([], [], color=colours[f], label=f.split(".", 1)[1] + (" (stable_rounds)" if f in stable
                                                                                  else "")) for f in families]
                  + [Line2D([], [], color="black", linestyle=s, label=lab) for s, lab in FIELD_LABELS.items()])
        written.append(_figure(plt, f"{section}: the oracle's own error against float64 (worst over variants)",
                               draw, out / f"precision_{section}.png", legend))
    lsh = [n for n in results if n.startswith(LSH_NAMES)]
    if lsh:
        base = sorted({n.split("+")[0] for n in lsh})
        colours = {n: plt.cm.tab10(k % 10) for k, n in enumerate(base)}

        def draw_lsh(ax: Any, dtype: str, part: str) -> None:
            for name in lsh:
                rows = results[name].get("seq_len", [])
                pts = [(r["size"] / rows[0]["size"], r[f"{dtype}_{part}"]) for r in rows
                       if r.get(f"{dtype}_{part}", 0) > 0]
                if pts:
                    ax.plot(*zip(*pts), ":" if "+" in name else "-", color=colours[name.split("+")[0]],
                            marker="o" if "+" in name else ".", linewidth=1.2)

        legend = ([Line2D([], [], color=colours[n], label=n) for n in base]
                  + [Line2D([], [], color="black", linestyle="-", label="default round weights"),
                     Line2D([], [], color="black", linestyle=":", marker="o", label="stable_rounds=True")])
        written.append(_figure(plt, "LSH attention against sequence length: default and stable_rounds", draw_lsh,
                               out / "precision_lsh.png", legend, xlabel="seq_len / default seq_len"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="mechanisms (and their variants)")
    parser.add_argument("--out", default="docs/precision", help="folder for precision.json, table.txt, PNGs")
    parser.add_argument("--outliers", action="store_true", help="only the targeted outlier measurements")
    parser.add_argument("--replot", action="store_true", help="only the table and plots, from --out's precision.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.outliers:
        (out / "outliers.json").write_text(json.dumps(outliers(), indent=1))
        print(f"outliers in {time.perf_counter() - start:.0f} s; wrote {out / 'outliers.json'}", file=sys.stderr)
        return 0
    if args.replot:
        results = json.loads((out / "precision.json").read_text())
    else:
        results = measure_all(args.only)
        (out / "precision.json").write_text(json.dumps(results, indent=1))
    (out / "table.txt").write_text(_table(results))  # Markdown, included by docs/precision.md
    _plots(results, out)
    print(f"{len(results)} rows of mechanisms in {time.perf_counter() - start:.0f} s; wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
