"""Peak RSS of the oracle and of PyTorch, each measured in a fresh process (benchmarks._rss)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .measure import MiB

DEFAULT = ("nn.linear", "nn.layer_norm", "nn.feed_forward", "nn.attention", "nn.attention.causal", "nn.encoder_layer",
           "attention.lsh", "attention.lsra", "architecture.reversible")


def run_memory(out: str, *, names: list[str], dtypes: list[str], batch: int) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    rows = []
    for name in names or DEFAULT:
        for dtype in dtypes:
            row = {"name": name, "dtype": dtype, "batch": batch}
            for side in ("oracle", "torch"):
                proc = subprocess.run([sys.executable, "-m", "benchmarks._rss", name, dtype, side, str(batch)],
                                      capture_output=True, text=True, env=env)
                row[side] = float(proc.stdout.split()[-1]) if proc.returncode == 0 and proc.stdout.split() else None
            rows.append(row)
            print(f"{name:28s} {dtype:8s} oracle {_mib(row['oracle'])} MiB  torch {_mib(row['torch'])} MiB", flush=True)
    with open(os.path.join(out, "memory.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    return 0


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / MiB:.0f}"


def memory_table(rows: list[dict]) -> str:
    lines = ["| mechanism | dtype | batch | oracle peak RSS MiB | torch peak RSS MiB | oracle / torch |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['oracle'] / r['torch']:.2f}" if r["oracle"] and r["torch"] else "-"
        lines.append(f"| {r['name']} | {r['dtype']} | {r['batch']} | {_mib(r['oracle'])} | {_mib(r['torch'])} | {ratio} |")
    return "\n".join(lines)
