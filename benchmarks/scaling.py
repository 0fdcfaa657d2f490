"""Time and peak memory of the oracle against sequence length (dense, LSH and LSRA attention)
and against depth (reversible and ordinary stacks). Writes scaling.json and two small PNGs."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import numpy as np

from reference.backend import namespace
from reference.random import generator, normal

from . import measure

D_MODEL, HEADS = 256, 4


def _dense(t: int, dtype, xp):
    from reference.nn.attention import init_attention, mha_backward, mha_forward
    rng = generator(0)
    x = normal(rng, (1, t, D_MODEL), xp=xp, dtype=dtype)
    params = init_attention(rng, D_MODEL, xp=xp, dtype=dtype)
    dy = normal(rng, (1, t, D_MODEL), xp=xp, dtype=dtype)

    def run():
        y, cache = mha_forward(x, x, params, n_heads=HEADS)
        mha_backward(dy, cache)
    return run


def _lsh(t: int, dtype, xp):
    from reference.registry import get

    from .cases import lsh_case
    mechanism = get("attention.lsh")
    case = lsh_case(0, dtype, xp, batch=1, seq=t, d_model=D_MODEL, n_heads=HEADS, d_head=D_MODEL // HEADS,
                    n_hashes=2, chunk_len=64)
    dy = {"y": normal(generator(1), (1, t, D_MODEL), xp=xp, dtype=dtype)}

    def run():
        _, cache = mechanism.forward(case)
        mechanism.backward(cache, dy)
    return run


def _lsra(t: int, dtype, xp):
    from reference.registry import get

    mechanism = get("attention.lsra")
    case = mechanism.example(0, dtype, xp, {"batch": 1, "seq_len": t, "d_model": D_MODEL, "d_attn": D_MODEL // 2,
                                            "n_attn_heads": HEADS, "n_conv_heads": 2 * HEADS, "kernel_size": 7,
                                            "n_padded": 0, "dropout_rate": 0.0})
    dy = {"y": normal(generator(1), (1, t, D_MODEL), xp=xp, dtype=dtype)}

    def run():
        _, cache = mechanism.forward(case)
        mechanism.backward(cache, dy)
    return run


def stack_runner(n_layers: int, *, reversible: bool, batch: int, seq: int, d_model: int, d_ff: int,
                 n_heads: int = 2, dtype=np.float64, xp=None) -> tuple[Callable[[], Any], float]:
    """(run, bytes of the parameter gradients): one forward + backward of an N-layer stack."""
    from reference.architecture.reversible import (
        init_reversible_layers,
        reversible_backward,
        reversible_forward,
        sample_reversible_tapes,
        stored_backward,
        stored_forward,
    )
    from reference.architecture.reversible_blocks import ReversibleConfig
    xp = xp or namespace("numpy")
    config = ReversibleConfig(n_heads=n_heads, attention="full", n_ff_chunks=1, activation="gelu_tanh")
    rng = generator(0)
    x = normal(rng, (batch, seq, d_model), xp=xp, dtype=dtype)
    layers = init_reversible_layers(rng, n_layers, d_model, d_ff, config, xp=xp, dtype=dtype)
    tapes = sample_reversible_tapes(rng, n_layers, batch, seq, d_model, d_ff, config, rate=0.0, xp=xp, dtype=dtype)
    dy = normal(rng, (batch, seq, d_model), xp=xp, dtype=dtype)
    fwd, bwd = (reversible_forward, reversible_backward) if reversible else (stored_forward, stored_backward)
    param_bytes = float(sum(v.nbytes for p in layers for v in p.values()))

    def run():
        _, cache = fwd(x, layers, tapes, config)
        bwd(dy, dy, cache)
    return run, param_bytes


def _measure(run: Callable[[], None], repeats: int) -> tuple[float, float]:
    seconds = measure.median_time(run, repeats)
    return seconds, measure.traced_peak(run)


def run_scaling(out: str, *, quick: bool, repeats: int, backend: str = "numpy") -> dict[str, Any]:
    xp = namespace(backend)
    dtype = np.float32
    lengths = {"dense (nn.attention)": ([64, 128] if quick else [256, 512, 1024, 2048, 4096], _dense),
               "LSH (attention.lsh)": ([128, 256] if quick else [256, 512, 1024, 2048, 4096, 8192, 16384], _lsh),
               "LSRA (attention.lsra)": ([64, 128] if quick else [256, 512, 1024, 2048, 4096, 8192], _lsra)}
    result: dict[str, Any] = {"sequence": {}, "depth": {}, "dtype_sequence": "float32", "dtype_depth": "float64",
                              "sizes_sequence": f"batch 1, width {D_MODEL}, {HEADS} heads",
                              "sizes_depth": "batch 2, seq 128, width 64, d_ff 128, 2 heads, no dropout"}
    for label, (ts, make) in lengths.items():
        rows = []
        for t in ts:
            seconds, peak = _measure(make(t, dtype, xp), repeats)
            rows.append({"T": t, "seconds": seconds, "peak_bytes": peak})
            print(f"{label:24s} T={t:6d}  {1e3 * seconds:9.1f} ms  peak {peak / measure.MiB:9.1f} MiB", flush=True)
        result["sequence"][label] = rows
    depths = [1, 2, 4] if quick else [1, 2, 4, 8, 16, 32, 48]
    size = dict(batch=2, seq=32, d_model=16, d_ff=24) if quick else dict(batch=2, seq=128, d_model=64, d_ff=128)
    for label, reversible in (("reversible", True), ("ordinary (stored activations)", False)):
        rows = []
        for n in depths:
            run, param_bytes = stack_runner(n, reversible=reversible, **size)
            seconds, peak = _measure(run, max(1, repeats // 2))
            rows.append({"layers": n, "seconds": seconds, "peak_bytes": peak, "grad_bytes": param_bytes})
            print(f"{label:30s} N={n:3d}  {1e3 * seconds:9.1f} ms  peak {peak / measure.MiB:8.1f} MiB "
                  f"(of which parameter gradients {param_bytes / measure.MiB:.1f})", flush=True)
        result["depth"][label] = rows
    with open(os.path.join(out, "scaling.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    plot_scaling(result, out)
    return result


def plot_scaling(result: dict[str, Any], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=80)
    for label, rows in result["sequence"].items():
        ts = [r["T"] for r in rows]
        a.loglog(ts, [r["seconds"] for r in rows], "o-", label=label, base=2)
        b.loglog(ts, [r["peak_bytes"] / measure.MiB for r in rows], "o-", label=label, base=2)
    a.set(xlabel="sequence length", ylabel="forward + backward (s)", title="time")
    b.set(xlabel="sequence length", ylabel="peak MiB (tracemalloc)", title="memory")
    a.legend(fontsize=7)
    fig.suptitle(f"Attention, {result['dtype_sequence']}, {result['sizes_sequence']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "scaling_sequence.png"))
    plt.close(fig)

    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=80)
    for (label, rows), color in zip(result["depth"].items(), ("C0", "C1")):
        ns = [r["layers"] for r in rows]
        a.plot(ns, [r["seconds"] for r in rows], "o-", color=color, label=label)
        b.plot(ns, [r["peak_bytes"] / measure.MiB for r in rows], "o-", color=color, label=label)
        b.plot(ns, [(r["peak_bytes"] - r["grad_bytes"]) / measure.MiB for r in rows], "x:", color=color,
               label=f"{label} minus parameter gradients")
    a.legend(fontsize=6)
    a.set(xlabel="layers", ylabel="forward + backward (s)", title="time")
    b.set(xlabel="layers", ylabel="peak MiB (tracemalloc)", title="memory")
    b.legend(fontsize=6)
    fig.suptitle(f"Stacks, {result['dtype_depth']}, {result['sizes_depth']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "scaling_depth.png"))
    plt.close(fig)

