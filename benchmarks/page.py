"""``python -m benchmarks page``: write docs/performance.md and copy its plots from the results folder."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from typing import Any

from .measure import MiB

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
GiB = 2.0 ** 30


def _load(out: str, name: str) -> Any:
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh) if name.endswith(".json") else fh.read()


def _lscpu() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "(lscpu unavailable)"
    keep = ("Architecture", "CPU(s)", "Model name", "Thread(s) per core", "Core(s) per socket", "Socket(s)",
            "L1d cache", "L2 cache", "L3 cache", "Hypervisor vendor", "Flags")
    lines = []
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip()
        if key in keep:
            if key == "Flags":  # only the vector extensions that matter for BLAS
                flags = [f for f in line.split(":", 1)[1].split() if f in ("avx", "avx2", "fma", "avx512f")]
                line = f"Flags (vector):{' ' * 26}{' '.join(flags)}"
            lines.append(line)
    return "\n".join(lines)


def _has_peer(r: dict) -> bool:
    return r.get("peer_s") is not None and not math.isnan(r["peer_s"])


def _summary(rows: list[dict]) -> str:
    def ratio(r: dict) -> float:
        return math.nan if r.get("ratio") is None else r["ratio"]

    groups = (("building blocks (nn.*), target 1.5 x torch's fused kernels", lambda r: r["name"].startswith("nn.")),
              ("mechanisms with a real peer, target 1.0 x the peer",
               lambda r: not r["name"].startswith("nn.") and _has_peer(r)),
              ("mechanisms without a peer, target 1.5 x torch(oracle)",
               lambda r: not r["name"].startswith("nn.") and not _has_peer(r)))
    lines = []
    for threads in sorted({r.get("threads", 1) for r in rows}):
        lines.append(f"**{threads} thread{'s' if threads > 1 else ''}:**")
        lines.append("")
        for label, pick in groups:
            chosen = [r for r in rows if r.get("threads", 1) == threads and pick(r) and not math.isnan(ratio(r))]
            if not chosen:
                continue
            met = [r for r in chosen if r["verdict"] == "met"]
            missed = sorted((r for r in chosen if r["verdict"] != "met"), key=lambda r: -ratio(r))
            lines.append(f"- {label}: {len(met)} of {len(chosen)} (mechanism, dtype) rows met"
                         + ("; missed: " + ", ".join(f"`{r['name']}` {r['dtype']} {ratio(r):.2f}" for r in missed)
                            if missed else "") + ".")
        lines.append("")
    errors = sorted({r["name"] for r in rows if r.get("error")})
    if errors:
        lines.append(f"- errors (see the table): {', '.join(errors)}.")
    return "\n".join(lines).rstrip()


def _runs(results: dict | None) -> str:
    if not results:
        return "(no run)"
    lines = []
    for run in results.get("runs", []):
        only = " ".join(run.get("only") or []) or "every mechanism"
        lines.append(f"- {run['when']}: {only}, {run['threads']} thread(s), {run['seconds']} s, median of at least "
                     f"{run['repeats']} interleaved runs, load average {run['load']} (1, 5, 15 min) at the start.")
    return "\n".join(lines)


def write_page(out: str) -> str:
    results, table = _load(out, "results.json"), _load(out, "table.md")
    scaling, targets = _load(out, "scaling.json"), _load(out, "targets.json")
    static = os.path.join(DOCS, "performance")
    os.makedirs(static, exist_ok=True)
    for png in ("ratios.png", "scaling_sequence.png", "scaling_depth.png"):
        if os.path.exists(os.path.join(out, png)):
            shutil.copyfile(os.path.join(out, png), os.path.join(static, png))
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "page_text.md")) as fh:
        text = fh.read()
    machine = results["machine"] if results else {}
    parts = {
        "LSCPU": _lscpu(),
        "MACHINE": ", ".join(f"{k} {v}" for k, v in machine.items() if k != "threads"),
        "RUNS": _runs(results),
        "SUMMARY": _summary(results["rows"]) if results else "(no results)",
        "TABLE": table or "(no table)",
        "TARGETS": _targets_text(targets) if targets else "(no targets measured)",
        "SCALING": _scaling_text(scaling) if scaling else "(no scaling measured)",
        "MEMORY": _memory_text(_load(out, "memory.json")),
    }
    for key, value in parts.items():
        text = text.replace("{{" + key + "}}", value)
    path = os.path.join(DOCS, "performance.md")
    with open(path, "w") as fh:
        fh.write(text)
    print(f"wrote {path}")
    return path


def _targets_text(t: dict) -> str:
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    for r in t.get("lsh", []):
        lines.append(f"| LSH attention forward + backward, L = {r['seq']:,}, one head of width 64, "
                     f"{r['n_hashes']} hashes, chunk {r['chunk']}, {r['dtype']}: peak within 8 GiB "
                     f"| {r['peak_bytes'] / GiB:.2f} GiB (tracemalloc) | {'met' if r['met'] else 'missed'} |")
    rev = t.get("reversible")
    if rev:
        s = rev["size"]
        lines.append(f"| reversible stack, 48 layers vs 2 (batch {s['batch']}, seq {s['seq']}, width {s['d_model']}, "
                     f"d_ff {s['d_ff']}, {rev['dtype']}): forward + backward peak at most 1.5x "
                     f"| {rev['ratio']:.2f}x ({rev['reversible_48']['peak_bytes'] / MiB:.0f} vs "
                     f"{rev['reversible_2']['peak_bytes'] / MiB:.0f} MiB; {rev['ratio_without_grads']:.2f}x without the "
                     f"parameter gradients, which grow with depth by necessity); the ordinary stack: "
                     f"{rev['ordinary_ratio']:.1f}x ({rev['ordinary_48']['peak_bytes'] / MiB:.0f} MiB) "
                     f"| {'met' if rev['met'] else 'missed'} |")
    for r in t.get("reversible_time", []):
        z = r["size"]
        lines.append(f"| reversible stack, {z['n_layers']} layers (batch {z['batch']}, seq {z['seq']}, width "
                     f"{z['d_model']}, d_ff {z['d_ff']}, {r['dtype']}): forward + backward time at most 1.5x an "
                     f"ordinary stack of the same layers | {r['ratio']:.2f}x ({1e3 * r['reversible']:.0f} vs "
                     f"{1e3 * r['ordinary']:.0f} ms) | {'met' if r['met'] else 'missed'} |")
    g = t.get("gradient_check")
    if g:
        lines.append(f"| `{g.get('command', 'python -m gradients check --mode fast')}`: every mechanism in under 60 s "
                     f"| {g['seconds']:.1f} s with {g['threads']} worker(s), exit {g['exit']} ({g['summary']}) "
                     f"| {'met' if g['met'] else 'missed by ' + format(g['seconds'] / 60 - 1, '.0%')} |")
    return "\n".join(lines)


def _scaling_text(s: dict) -> str:
    lines = [f"Sequence length: oracle forward + backward, {s['dtype_sequence']}, {s['sizes_sequence']}.", "",
             "| attention | " + " | ".join(f"T={r['T']}" for r in max(s["sequence"].values(), key=len)) + " |",
             "|---|" + "---:|" * max(len(v) for v in s["sequence"].values())]
    width = max(len(v) for v in s["sequence"].values())
    for label, rows in s["sequence"].items():
        cells = [f"{1e3 * r['seconds']:.0f} ms, {r['peak_bytes'] / MiB:.0f} MiB" for r in rows]
        lines.append(f"| {label} | " + " | ".join(cells + ["-"] * (width - len(cells))) + " |")
    lines += ["", f"Depth: {s['dtype_depth']}, {s['sizes_depth']}.", "",
              "| stack | " + " | ".join(f"N={r['layers']}" for r in next(iter(s["depth"].values()))) + " |",
              "|---|" + "---:|" * len(next(iter(s["depth"].values())))]
    for label, rows in s["depth"].items():
        lines.append(f"| {label} | " + " | ".join(f"{1e3 * r['seconds']:.0f} ms, {r['peak_bytes'] / MiB:.0f} MiB"
                                                   for r in rows) + " |")
    return "\n".join(lines)


def _memory_text(rows: Any) -> str:
    if not rows:
        return "(not measured: run `python -m benchmarks memory`)"
    from .memory import memory_table

    return memory_table(rows)
