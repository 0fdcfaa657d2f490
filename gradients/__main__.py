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
    for mechanism in mechanisms:
        try:
            report.extend(check_mechanism(mechanism, backend=backend, dtype=args.dtype, mode=args.mode,
                                          seed=args.seed))
        except Exception as err:  # a crash is a failure of that mechanism, reported, not hidden
            from .check import TensorResult

            report.results.append(TensorResult(mechanism.name, "(forward/backward)", (), float("inf"),
                                               float("inf"), "-", None, None, False,
                                               f"raised {type(err).__name__}: {err}"))
    print(report.table())
    print(f"({len(mechanisms)} mechanisms in {time.perf_counter() - start:.1f} s)")
    for failure in report.failures:
        print("FAILED:", failure.describe(), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(report.to_json())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
