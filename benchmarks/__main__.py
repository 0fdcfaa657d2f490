"""``python -m benchmarks``: speed of the oracle against its peers and PyTorch; see docs/performance.md.

    python -m benchmarks                        every mechanism at its realistic size, float32 and float64, beside its
                                                peer and torch(oracle): benchmarks/results/: table.md, results.json, ratios.png
    python -m benchmarks --only nn.attention    one mechanism (a name also selects its variants)
    python -m benchmarks --quick                registered default sizes, 1 repeat (a smoke test)
    BENCH_THREADS=2 python -m benchmarks --merge --only NAME   add all-threads rows to results.json
    python -m benchmarks scaling                time and memory against sequence length and depth (plots)
    python -m benchmarks targets                LSH at 65,536 tokens; reversible 48 vs 2 layers; the gradient check's time
    python -m benchmarks targets --only gradient_check     one of them (lsh, reversible, gradient_check)
    python -m benchmarks memory --only NAME    peak RSS of oracle and torch, each in a fresh process
    python -m benchmarks merge --inputs A B --out benchmarks/results   combine the results of several runs
    python -m benchmarks page                   docs/performance.md and its plots from benchmarks/results/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from . import THREADS


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # the environment variables set in benchmarks/__init__ already apply
        pass


def machine() -> dict[str, str]:
    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": str(os.cpu_count()), "threads": str(THREADS), "python": platform.python_version(),
            "numpy": numpy.__version__, "torch": torch.__version__, "platform": platform.platform()}


def _read(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def _merged(parts: list[dict | None]) -> dict:
    """Results of several runs in one: a later run's row replaces an earlier one's (same name, dtype, threads)."""
    rows: dict[tuple, dict] = {}
    runs: list[dict] = []
    out: dict = {}
    for part in parts:
        if not part:
            continue
        out.setdefault("machine", part["machine"])
        out.setdefault("backend", part.get("backend", "numpy"))
        runs += part.get("runs", [])
        for d in part["rows"]:
            rows[(d["name"], d["dtype"], d["threads"])] = d
    return {**out, "runs": runs, "rows": list(rows.values())}


def _write(out: str, results: dict) -> None:
    """results.json, table.md (with a header naming the machine and the runs) and ratios.png."""
    from .report import markdown_table, plot_ratios
    from .run import row_from_dict

    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    info = results["machine"]
    all_rows = [row_from_dict(d) for d in results["rows"]]
    runs = "; ".join(f"{r['when']}, {r['threads']} thread(s), {r['seconds']} s, load average {r['load']} at the "
                     f"start, median of at least {r['repeats']} interleaved runs{', quick sizes' if r['quick'] else ''}"
                     for r in results["runs"])
    header = (f"Measured on {info['cpu']} ({info['cores']} cores), numpy {info['numpy']}, torch {info['torch']}, "
              f"backend {results['backend']}: {runs}.\n\n")
    with open(os.path.join(out, "table.md"), "w") as fh:
        fh.write(header + markdown_table(all_rows))
    plot_ratios(all_rows, os.path.join(out, "ratios.png"))


def _load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", nargs="?", default="table", choices=("table", "scaling", "targets", "page", "memory", "merge"))
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="mechanisms (and their variants)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (median; default 5, quick 1)")
    parser.add_argument("--dtype", nargs="+", choices=("float32", "float64"), default=["float32", "float64"])
    parser.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    parser.add_argument("--quick", action="store_true", help="registered default sizes, 1 repeat (a smoke test)")
    parser.add_argument("--batch", type=int, default=None, help="batch size instead of the realistic configuration's")
    parser.add_argument("--no-torch", action="store_true", help="time the oracle only")
    parser.add_argument("--no-torch-oracle", action="store_true", help="skip the torch(oracle) column")
    parser.add_argument("--exact", action="store_true", help="--only names select exactly those, not their variants")
    parser.add_argument("--inputs", nargs="+", default=[], metavar="DIR",
                        help="merge: results folders to combine into --out (later folders win)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of results.json that this run does not remeasure (another thread count)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for table.md, results.json and plots (default benchmarks/results)")
    args = parser.parse_args(argv)

    if args.backend == "cupy":
        from reference.backend import namespace

        try:
            namespace("cupy")
        except ImportError as err:
            print(f"python -m benchmarks: --backend cupy: {err}", file=sys.stderr)
            return 2
    _set_threads(THREADS)
    repeats = args.repeats or (1 if args.quick else 3)
    os.makedirs(args.out, exist_ok=True)
    info = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)

    if args.suite == "scaling":
        from .scaling import run_scaling

        run_scaling(args.out, quick=args.quick, repeats=repeats, backend=args.backend)
        return 0
    if args.suite == "memory":
        from .memory import run_memory

        return run_memory(args.out, names=args.only, dtypes=args.dtype, batch=args.batch or 8)
    if args.suite == "merge":
        _write(args.out, _merged([_read(os.path.join(d, "results.json")) for d in args.inputs]))
        return 0
    if args.suite == "page":
        from .page import write_page

        write_page(args.out)
        return 0
    if args.suite == "targets":
        from .targets import run_targets

        return run_targets(args.out, quick=args.quick, only=args.only)

    from reference.registry import select

    from .run import bench

    try:
        mechanisms = select(args.only)
        if args.exact:
            mechanisms = [m for m in mechanisms if m.name in args.only]
    except KeyError as err:
        parser.error(str(err.args[0]))
    rows = []
    start = time.perf_counter()
    measured = {"when": time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), "seconds": 0, "threads": THREADS,
                "load": _load_average(), "only": args.only, "quick": args.quick, "repeats": repeats}
    old = _read(os.path.join(args.out, "results.json")) if args.merge else None
    for mechanism in mechanisms:
        for dtype in args.dtype:
            row = bench(mechanism, dtype=dtype, repeats=repeats, quick=args.quick, backend=args.backend,
                        with_torch=not args.no_torch, with_torch_oracle=not args.no_torch_oracle, batch=args.batch)
            rows.append(row)
            print(f"{row.name:40s} {dtype:8s} t{row.threads} oracle {1e3 * row.oracle_s:9.2f} ms  "
                  f"peer {1e3 * row.peer_s:9.2f} ms  torch(oracle) {1e3 * row.torch_oracle_s:9.2f} ms  "
                  f"ratio {row.ratio:6.2f}  {row.verdict()}" + (f"  [{row.error}]" if row.error else ""), flush=True)
            measured["seconds"] = round(time.perf_counter() - start)
            results = _merged([old, {"machine": info, "backend": args.backend, "runs": [measured],
                                     "rows": [{k: v for k, v in r.to_dict().items() if k != "extra"} for r in rows]}])
            _write(args.out, results)  # after every row: a long run that is stopped keeps what it measured
    print()
    with open(os.path.join(args.out, "table.md")) as fh:
        print(fh.read())
    errors = [r for r in rows if r.error]
    for r in errors:
        print(f"ERROR {r.name} {r.dtype}: {r.extra.get('traceback', r.error)}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
