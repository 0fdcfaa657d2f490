"""The benchmark table (markdown) and the ratio plot."""

from __future__ import annotations

import math

from .measure import MiB


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{1e3 * seconds:.1f}" if seconds >= 1e-2 else f"{1e3 * seconds:.2f}"


def _mib(n: float) -> str:
    return "-" if math.isnan(n) else f"{n / MiB:.1f}"


def markdown_table(rows) -> str:
    lines = ["| mechanism | dtype | size | oracle ms | torch ms | ratio | target | verdict | torch kind "
             "| oracle peak MiB (tracemalloc) | oracle peak MiB (RSS) | torch peak MiB (RSS) |",
             "|---|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|"]
    for r in rows:
        ratio = "-" if math.isnan(r.ratio) else f"{r.ratio:.2f}"
        verdict = r.verdict() if not r.error else f"error: {r.error}".replace("|", "/")
        lines.append(f"| {r.name} | {r.dtype} | {r.size} | {_ms(r.oracle_s)} | {_ms(r.torch_s)} | {ratio} "
                     f"| {r.target:.1f} | {verdict} | {r.torch_kind} | {_mib(r.oracle_traced)} | {_mib(r.oracle_rss)} "
                     f"| {_mib(r.torch_rss)} |")
    return "\n".join(lines) + "\n"


def plot_ratios(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r.name for r in rows))
    dtypes = list(dict.fromkeys(r.dtype for r in rows))
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.16 * len(names)), dpi=80)
    height = 0.8 / max(1, len(dtypes))
    for j, dtype in enumerate(dtypes):
        by = {r.name: r.ratio for r in rows if r.dtype == dtype}
        ax.barh([i + j * height for i in range(len(names))], [by.get(n, math.nan) for n in names], height,
                label=dtype)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.axvline(1.5, color="r", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yticks([i + height * (len(dtypes) - 1) / 2 for i in range(len(names))], names, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("oracle time / torch time (forward + backward), log scale")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
