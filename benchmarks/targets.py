"""The absolute targets, measured and written to targets.json / targets.md.

* LSH attention forward + backward at sequence length 65,536 (one head of width 64) within 8 GiB;
* a 48-layer reversible stack's forward + backward peak memory at most 1.5 times a 2-layer stack's;
* a reversible stack's forward + backward time at most 1.5 times an ordinary stack of the same layers;
* ``python -m gradients check --mode fast --jobs N`` of everything in under 60 s (N = the thread count set here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from reference.backend import namespace
from reference.random import generator, normal

from . import THREADS, measure

GiB = 2.0 ** 30


def lsh_long(seq: int, dtype, *, n_hashes: int = 2, chunk: int = 64) -> dict[str, Any]:
    from reference.registry import get

    from .cases import lsh_case
    xp = namespace("numpy")
    mechanism = get("attention.lsh")
    case = lsh_case(0, dtype, xp, batch=1, seq=seq, d_model=64, n_heads=1, d_head=64, n_hashes=n_hashes,
                    chunk_len=chunk)
    dy = {"y": normal(generator(1), (1, seq, 64), xp=xp, dtype=dtype)}

    def run():
        _, cache = mechanism.forward(case)
        mechanism.backward(cache, dy)

    start = time.perf_counter()
    peak = measure.traced_peak(run)
    seconds = time.perf_counter() - start
    return {"seq": seq, "dtype": np.dtype(dtype).name, "n_hashes": n_hashes, "chunk": chunk,
            "n_buckets": case.config.n_buckets, "peak_bytes": peak, "seconds_traced": seconds,
            "target_bytes": 8 * GiB, "met": peak <= 8 * GiB}


def reversible_depth(dtype=np.float64, **size: int) -> dict[str, Any]:
    from .scaling import stack_runner
    out: dict[str, Any] = {"size": size, "dtype": np.dtype(dtype).name}
    for n in (2, 48):
        for reversible in (True, False):
            run, grad_bytes = stack_runner(n, reversible=reversible, dtype=dtype, **size)
            peak = measure.traced_peak(run)
            out[f"{'reversible' if reversible else 'ordinary'}_{n}"] = {"peak_bytes": peak, "grad_bytes": grad_bytes}
    r2, r48 = out["reversible_2"], out["reversible_48"]
    out["ratio"] = r48["peak_bytes"] / r2["peak_bytes"]
    out["ratio_without_grads"] = (r48["peak_bytes"] - r48["grad_bytes"]) / (r2["peak_bytes"] - r2["grad_bytes"])
    out["ordinary_ratio"] = out["ordinary_48"]["peak_bytes"] / out["ordinary_2"]["peak_bytes"]
    out["met"] = out["ratio"] <= 1.5
    return out


def reversible_time(dtype=np.float64, *, repeats: int = 3, n_layers: int = 6, **size: int) -> dict[str, Any]:
    """Forward + backward time of a reversible stack over an ordinary stack of the same layers (target 1.5):
    the reversible backward recomputes every layer's forward, by design."""
    from .scaling import stack_runner

    reversible, _ = stack_runner(n_layers, reversible=True, dtype=dtype, **size)
    ordinary, _ = stack_runner(n_layers, reversible=False, dtype=dtype, **size)
    clock = measure.cpu_clock if THREADS == 1 else time.perf_counter  # CPU time with one thread: the machine is shared
    times = measure.interleaved({"reversible": reversible, "ordinary": ordinary}, repeats, min_seconds=0.0,
                                clock=clock)
    ratio = times["reversible"] / times["ordinary"]
    return {"size": {**size, "n_layers": n_layers}, "dtype": np.dtype(dtype).name, **times, "ratio": ratio,
            "met": ratio <= 1.5}


def gradient_check_time(backend: str = "numpy") -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # THREADS workers, one thread each
    start = time.perf_counter()
    command = [sys.executable, "-m", "gradients", "check", "--mode", "fast", "--backend", backend,
               "--jobs", str(THREADS)]
    proc = subprocess.run(command,
                          capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    return {"seconds": seconds, "exit": proc.returncode, "summary": tail, "threads": THREADS, "met": seconds < 60,
            "command": "python -m " + " ".join(command[2:])}


TARGETS = ("lsh", "reversible", "reversible_time", "gradient_check")


def run_targets(out: str, *, quick: bool, only: list[str] | None = None) -> int:
    """Measure the targets named in ``only`` (all by default), merged into ``out``/targets.json."""
    only = list(only or TARGETS)
    unknown = sorted(set(only) - set(TARGETS))
    if unknown:
        raise SystemExit(f"python -m benchmarks targets: unknown target(s) {unknown}; choose from {TARGETS}")
    path = os.path.join(out, "targets.json")
    result: dict[str, Any] = {}
    if os.path.exists(path) and not quick:
        with open(path) as fh:
            result = json.load(fh)
    if "lsh" in only:
        seq = 4096 if quick else 65536
        result["lsh"] = [lsh_long(seq, np.float64), lsh_long(seq, np.float32)]
        for r in result["lsh"]:
            print(f"LSH L={r['seq']} {r['dtype']}: peak {r['peak_bytes'] / GiB:.2f} GiB (target 8), "
                  f"{r['seconds_traced']:.1f} s under tracemalloc", flush=True)
    if "reversible" in only:
        size = dict(batch=1, seq=16, d_model=8, d_ff=12) if quick else dict(batch=8, seq=512, d_model=64, d_ff=128)
        rev = result["reversible"] = reversible_depth(**size)
        print(f"reversible 48 vs 2 layers: peak ratio {rev['ratio']:.2f} (target 1.5), "
              f"{rev['ratio_without_grads']:.2f} without the parameter gradients; "
              f"ordinary stack {rev['ordinary_ratio']:.2f}", flush=True)
    if "reversible_time" in only:
        size = dict(batch=1, seq=16, d_model=8, d_ff=12) if quick else dict(batch=2, seq=256, d_model=128, d_ff=512)
        result["reversible_time"] = [reversible_time(dtype, **size) for dtype in (np.float32, np.float64)]
        for r in result["reversible_time"]:
            print(f"reversible / ordinary stack time, {r['dtype']}: {r['ratio']:.2f} (target 1.5)", flush=True)
    if "gradient_check" in only and not quick:
        g = result["gradient_check"] = gradient_check_time()
        print(f"python -m gradients check --mode fast: {g['seconds']:.1f} s on {g['threads']} threads, "
              f"exit {g['exit']} ({g['summary']})", flush=True)
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)
    return 0
