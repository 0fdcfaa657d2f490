"""``python -m gradients check [NAME ...]``: gradient-check mechanisms and print the table.

Exit status 0 only if every tensor of every mechanism passes.
"""

from __future__ import annotations

import argparse
import sys
import time

from reference.backend import BACKENDS
from reference.registry import select

from .check import Report, check_mechanism


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradients", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check backward passes against finite differences")
    check.add_argument("names", nargs="*", help="mechanisms (a name also selects its variants); all by default")
    check.add_argument("--backend", choices=BACKENDS, default=None,
                       help="array backend (default: $ORACLE_BACKEND or numpy)")
    check.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    check.add_argument("--mode", choices=("full", "fast"), default="full",
                       help="full: every element; fast: random directions (dot-product test)")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    check.add_argument("--jobs", type=int, default=1, metavar="N",
                       help="check N mechanisms at a time in worker processes (default 1); the table keeps its order")
    args = parser.parse_args(argv)

    import os

    backend = args.backend or os.environ.get("ORACLE_BACKEND", "numpy")
    try:  # an absent backend (cupy without CuPy) is one clean error, not a failure per mechanism
        from reference.backend import namespace

        namespace(backend)
    except (ImportError, ValueError) as err:
        print(f"python -m gradients check: --backend {backend}: {err}", file=sys.stderr)
        return 2
    try:
        mechanisms = select(args.names)
    except KeyError as err:
        parser.error(str(err.args[0]))
    report = Report(mode=args.mode, backend=backend, dtype=args.dtype)
    start = time.perf_counter()
    if args.jobs > 1 and len(mechanisms) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=args.jobs) as pool:  # workers look the mechanisms up by name
            for part in pool.map(_check_one, [(m.name, backend, args.dtype, args.mode, args.seed) for m in mechanisms]):
                report.extend(part)
    else:
        for mechanism in mechanisms:
            report.extend(_check_one((mechanism, backend, args.dtype, args.mode, args.seed)))
    print(report.table())
    print(f"({len(mechanisms)} mechanisms in {time.perf_counter() - start:.1f} s)")
    for failure in report.failures:
        print("FAILED:", failure.describe(), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(report.to_json())
    return 0 if report.passed else 1


def _check_one(job: tuple) -> Report:
    """Check one mechanism, given as a Mechanism or by name (top-level, so worker processes can run it)."""
    from reference.registry import get

    mechanism, backend, dtype, mode, seed = job
    name = mechanism if isinstance(mechanism, str) else mechanism.name
    try:
        return check_mechanism(get(mechanism) if isinstance(mechanism, str) else mechanism, backend=backend,
                               dtype=dtype, mode=mode, seed=seed)
    except Exception as err:  # a crash is a failure of that mechanism, reported, not hidden
        from .check import TensorResult

        report = Report(mode=mode, backend=backend, dtype=dtype)
        report.results.append(TensorResult(name, "(forward/backward)", (), float("inf"), float("inf"), "-", None,
                                           None, False, f"raised {type(err).__name__}: {err}"))
        return report


if __name__ == "__main__":
    sys.exit(main())
