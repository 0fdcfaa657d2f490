"""The error model: how the oracle's own float32 and bfloat16 error grows with each mechanism's main size.

``python -m benchmarks.precision [--only NAME ...] [--out docs/precision]`` runs, for every registered
mechanism with a configuration, its forward and backward at the main size (the first of ``SIZE_FIELDS`` its
configuration has) times 1, 2, 4 and 8, in float64 (NumPy), float32 (NumPy) and bfloat16 (torch through
array-api-compat, on cuda where present). Each low-precision case is built from the same seed, so its inputs
are the float64 inputs rounded. The errors, against float64:

* forward: max over outputs of max |y - y64| / max |y64|;
* backward: max over differentiable tensors of max |g - g64| / max |g64|, with the float64 cotangents rounded.

Configuration fields ending in ``_margin`` are set to 0 (margins are for the gradient check), and a size the
configuration rejects is skipped.

It writes ``precision.json``, ``precision.md`` (the table) and one PNG per section into ``--out``. A few
minutes on two cores; CI does not run it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from reference.backend import dtype_of, from_numpy, namespace, to_numpy
from reference.random import random_cotangents
from reference.registry import Mechanism, all_mechanisms

#: The sizes swept, each that a mechanism's configuration has: sequence length, depth, hash rounds, width.
SIZE_FIELDS = ("seq_len", "n_layers", "n_hashes", "d_model")
#: As in the gradient checker: a tensor's error is relative to its own largest value, but never to less than
#: a thousandth of the largest gradient of the mechanism (a key bias's gradient is zero by structure).
REL_FLOOR = 1e-3
FACTORS = (1, 2, 4, 8)
PRECISIONS = (("float32", "numpy"), ("bfloat16", "torch"))


def _rel(low: Any, ref: Any, floor: float = 0.0) -> float:
    a, b = to_numpy(low).astype(np.complex128), to_numpy(ref).astype(np.complex128)
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, floor)
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 and b.size else 0.0


def _largest(arrays: dict[str, Any]) -> float:
    return max([float(np.max(np.abs(to_numpy(g)))) for g in arrays.values() if to_numpy(g).size] or [0.0])


def _run(mechanism: Mechanism, config: Any, dtype: str, backend: str, cot64: dict[str, Any] | None):
    xp = namespace(backend)
    case = mechanism.example(0, dtype_of(xp, dtype), xp, config)
    outputs, cache = mechanism.forward(case)
    floating = {k: v for k, v in outputs.items() if xp.isdtype(v.dtype, ("real floating", "complex floating"))}
    if cot64 is None:
        cot = random_cotangents(floating, 0)
    else:
        cot = {k: from_numpy(to_numpy(c), xp, floating[k].dtype) for k, c in cot64.items()}
    grads = mechanism.backward(cache, cot)
    return floating, cot, grads


def measure(mechanism: Mechanism) -> dict[str, list[dict[str, Any]]]:
    """{size field: rows}: errors of float32 and bfloat16 against float64 at that size times each of FACTORS."""
    if mechanism.config is None:
        return {}
    return {f: rows for f in SIZE_FIELDS if hasattr(mechanism.make_config(), f)
            for rows in [_sweep(mechanism, f)] if rows}


def _sweep(mechanism: Mechanism, field: str) -> list[dict[str, Any]]:
    base = mechanism.make_config()
    # Margins (hash_margin, ...) exist for the gradient check's finite differences; here they only limit the sizes.
    no_margins = {f: 0.0 for f in vars(base) if f.endswith("_margin")}
    rows = []
    for factor in FACTORS:
        size = getattr(base, field) * factor
        try:
            config = mechanism.make_config(base, **{field: size, **no_margins})
            out64, cot64, grads64 = _run(mechanism, config, "float64", "numpy", None)
        except (ValueError, TypeError):  # not a valid configuration at this size
            continue
        row: dict[str, Any] = {"size": size}
        for dtype, backend in PRECISIONS:
            try:
                outputs, _, grads = _run(mechanism, config, dtype, backend, cot64)
                row[f"{dtype}_forward"] = max(_rel(outputs[k], out64[k]) for k in out64)
                floor = REL_FLOOR * _largest(grads64)
                row[f"{dtype}_backward"] = max(_rel(grads[k], grads64[k], floor) for k in grads64)
            except Exception as err:  # a mechanism that cannot run in this precision is reported, not hidden
                row[f"{dtype}_error"] = f"{type(err).__name__}: {err}"[:160]
        rows.append(row)
    return rows


def _table(results: dict[str, Any]) -> str:
    lines = ["| mechanism | size field | sizes | float32 forward | float32 backward | bfloat16 forward | "
             "bfloat16 backward |", "|---|---|---|---|---|---|---|"]

    def span(rows: list[dict[str, Any]], key: str) -> str:
        values = [r[key] for r in rows if key in r]
        if not values:
            errors = [r[key.rsplit("_", 1)[0] + "_error"] for r in rows if key.rsplit("_", 1)[0] + "_error" in r]
            return f"fails: {errors[0]}" if errors else "-"
        return f"{values[0]:.1e} → {values[-1]:.1e}" if len(values) > 1 else f"{values[0]:.1e}"

    for name, sweeps in results.items():
        for field, rows in sweeps.items():
            sizes = ", ".join(str(r["size"]) for r in rows)
            lines.append(f"| `{name}` | `{field}` | {sizes} | " + " | ".join(
                span(rows, f"{d}_{p}") for d, _ in PRECISIONS for p in ("forward", "backward")) + " |")
    return "\n".join(lines) + "\n"


def _plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    sections = sorted({name.split(".")[0] for name in results})
    for section in sections:
        names = [n for n in results if n.split(".")[0] == section]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
        for ax, part in zip(axes, ("forward", "backward")):
            curves = [(f"{n} ({f})", rows) for n in names for f, rows in results[n].items()]
            for i, (name, rows) in enumerate(curves):
                colour = plt.cm.tab20(i % 20)
                for dtype, style in (("float32", "-"), ("bfloat16", "--")):
                    pts = [(r["size"] / rows[0]["size"], r[f"{dtype}_{part}"]) for r in rows
                           if f"{dtype}_{part}" in r and r[f"{dtype}_{part}"] > 0]
                    if pts:
                        ax.loglog(*zip(*pts), style, color=colour, marker=".", linewidth=1,
                                  label=name if dtype == "float32" else None)
            ax.set_title(f"{section}: {part} (solid float32, dashed bfloat16)", fontsize=8)
            ax.set_xlabel("main size / default", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0].set_ylabel("max error / max |float64 value|", fontsize=8)
        axes[1].legend(fontsize=5, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        path = out / f"precision_{section}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="mechanisms (and their variants)")
    parser.add_argument("--out", default="docs/precision", help="folder for precision.json, precision.md, PNGs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    start = time.perf_counter()
    for name, mechanism in all_mechanisms().items():
        if args.only and not any(name == n or name.startswith(n + ".") for n in args.only):
            continue
        t = time.perf_counter()
        result = measure(mechanism)
        if result:
            results[name] = result
            print(f"{name}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    (out / "precision.json").write_text(json.dumps(results, indent=1))
    (out / "precision.md").write_text(_table(results))
    _plots(results, out)
    print(f"{len(results)} mechanisms in {time.perf_counter() - start:.0f} s; wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
