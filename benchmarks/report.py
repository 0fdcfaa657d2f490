"""The benchmark table (markdown) and the ratio plot."""

from __future__ import annotations

import math


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{1e3 * seconds:.1f}" if seconds >= 1e-2 else f"{1e3 * seconds:.2f}"


def _ratio(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def markdown_table(rows) -> str:
    lines = ["| mechanism | dtype | threads | size | oracle ms | peer | peer ms | oracle / peer | torch(oracle) ms "
             "| oracle / torch(oracle) | target | verdict |",
             "|---|---|---:|---|---:|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        verdict = r.verdict() if not r.error else f"error: {r.error}".replace("|", "/")
        target = f"{r.target:.1f} x {'peer' if r.has_peer else 'torch(oracle)'}"
        peer_ratio = r.oracle_s / r.peer_s if r.has_peer else math.nan
        lines.append(f"| {r.name} | {r.dtype} | {r.threads} | {r.size} | {_ms(r.oracle_s)} | {r.peer_kind} "
                     f"| {_ms(r.peer_s)} | {_ratio(peer_ratio)} | {_ms(r.torch_oracle_s)} "
                     f"| {_ratio(r.ratio_torch_oracle)} | {target} | {verdict} |")
    return "\n".join(lines) + "\n"


def plot_ratios(rows, path: str) -> None:
    """One bar per (mechanism, dtype), at the smallest thread count measured: oracle time over the peer's (or torch(oracle)'s where there is no
    peer), log scale, the two targets drawn and labelled, a word where a bar is missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = min((r.threads for r in rows), default=1)
    rows = [r for r in rows if r.threads == threads]  # one bar per (mechanism, dtype): the one-thread rows
    names = list(dict.fromkeys(r.name for r in rows))
    dtypes = list(dict.fromkeys(r.dtype for r in rows))
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.34 * len(names) * max(1, len(dtypes)) / 2), dpi=100)
    height = 0.8 / max(1, len(dtypes))
    colours = {"float32": "tab:blue", "float64": "tab:orange"}
    finite = [r.ratio for r in rows if not math.isnan(r.ratio)]
    low = min([0.5, *finite]) * 0.8
    for j, dtype in enumerate(dtypes):
        by = {r.name: r for r in rows if r.dtype == dtype}
        for i, name in enumerate(names):
            y = i + j * height
            r = by.get(name)
            if r is None or math.isnan(r.ratio):
                word = "not run" if r is None else ("error" if r.error else "no torch run")
                ax.text(low * 1.05, y, f"{dtype}: {word}", va="center", fontsize=9, color="0.35")
                continue
            hatch = None if r.has_peer or r.name.startswith("nn.") else "//"
            ax.barh(y, r.ratio, height, left=0, color=colours.get(dtype), hatch=hatch, edgecolor="white",
                    label=dtype if i == 0 else None)
    ax.axvline(1.0, color="k", lw=1.0)
    ax.axvline(1.5, color="r", lw=1.0, ls="--")
    top = -0.6
    ax.text(1.0, top, " 1.0: target against a real peer", fontsize=9, va="bottom", ha="left")
    ax.text(1.5, top - 0.9, " 1.5: building blocks; no peer (hatched: vs torch(oracle))", fontsize=9, va="bottom",
            ha="left", color="r")
    ax.set_xscale("log")
    ax.set_xlim(left=low)
    ticks = [t for t in (0.1, 0.2, 0.5, 1, 1.5, 2, 3, 5, 10, 20, 50) if low <= t <= max([2.0, *finite]) * 1.2]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks([i + height * (len(dtypes) - 1) / 2 for i in range(len(names))], names, fontsize=9)
    ax.tick_params(axis="x", labelsize=9)
    ax.set_ylim(len(names) - 0.2, top - 1.6)
    ax.set_xlabel(f"oracle time / peer time (forward + backward, {threads} thread{'s' if threads > 1 else ''}), "
                  "log scale; < 1: the oracle is faster", fontsize=10)
    ax.legend(fontsize=9, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
