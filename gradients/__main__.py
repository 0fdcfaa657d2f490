"""``python -m gradients check [NAME ...]``: gradient-check mechanisms and print the table.

Exit status 0 only if every tensor of every mechanism passes; 2 (one line, no
traceback) for a usage error: an unknown name, field or backend, a bad value,
an unwritable ``--json`` path.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from reference.backend import BACKENDS
from reference.registry import select

from .check import Report, TensorResult, check_mechanism


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradients", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check backward passes against finite differences")
    check.add_argument("names", nargs="*", help="mechanisms (a name also selects its variants); all by default")
    check.add_argument("--config", action="append", default=[], metavar="FIELD=VALUE",
                       help="a configuration field (repeatable); `python -m reference list --config NAME` lists them")
    check.add_argument("--realistic", action="store_true",
                       help="start from each mechanism's realistic size (`reference list --config NAME` shows it); "
                            "--config overrides it")
    check.add_argument("--edges", action="store_true",
                       help="also check every named edge configuration of each mechanism")
    check.add_argument("--backend", choices=BACKENDS, default=None,
                       help="array backend (default: $ORACLE_BACKEND or numpy)")
    check.add_argument("--device", default=None,
                       help="torch device for --backend torch (default: $ORACLE_DEVICE, else cuda where present, else cpu)")
    check.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    check.add_argument("--mode", choices=("full", "fast"), default="full",
                       help="full: every element; fast: random directions (dot-product test)")
    check.add_argument("--seed", type=_non_negative, default=0)
    check.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    check.add_argument("--jobs", type=_positive, default=1, metavar="N",
                       help="check N mechanisms at a time in worker processes (default 1); the table keeps its order")
    args = parser.parse_args(argv)

    def usage_error(message: str) -> int:
        print(f"python -m gradients check: {message}", file=sys.stderr)
        return 2

    backend = args.backend or os.environ.get("ORACLE_BACKEND", "numpy")
    try:  # an absent backend (cupy without CuPy) is one clean error, not a failure per mechanism
        from reference.backend import namespace

        namespace(backend, args.device)
        if args.device:
            os.environ["ORACLE_DEVICE"] = args.device  # worker processes (--jobs) inherit it
    except (ImportError, ValueError) as err:
        return usage_error(f"--backend {backend}: {err}")
    try:
        mechanisms = select(args.names)
    except KeyError as err:
        return usage_error(str(err.args[0]))
    jobs: list[tuple] = []
    try:  # every configuration is validated before anything runs
        for mechanism in mechanisms:
            if args.config and mechanism.config is None:
                raise ValueError(f"{mechanism.name} has no configuration fields")
            fields = mechanism.config.parse(args.config) if args.config else {}
            if args.realistic:
                fields = {**mechanism.realistic, **fields}
            jobs.append((mechanism.name, "realistic" if args.realistic else None, mechanism.make_config(fields)))
            if args.edges:
                for label, edge in mechanism.edge_cases().items():
                    jobs.append((mechanism.name, label, edge))
    except (ValueError, TypeError) as err:
        return usage_error(f"--config: {err}")
    if args.json:  # checked by a real write now, not after the whole check has run
        target = Path(args.json)
        existed = target.exists()
        try:
            with open(target, "a"):
                pass
            if not existed:
                target.unlink()
        except OSError as err:
            return usage_error(f"--json {args.json}: cannot write there ({err.strerror})")

    report = Report(mode=args.mode, backend=backend, dtype=args.dtype)
    start = time.perf_counter()
    work = [(name, label, config, backend, args.dtype, args.mode, args.seed) for name, label, config in jobs]
    if args.jobs > 1 and len(work) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=args.jobs) as pool:  # workers look the mechanisms up by name
            for part in pool.map(_check_one, work):
                report.extend(part)
    else:
        for job in work:
            report.extend(_check_one(job))
    print(report.table())
    print(f"({len(work)} mechanism configurations in {time.perf_counter() - start:.1f} s)")
    for failure in report.failures:
        print("FAILED:", failure.describe(), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(report.to_json())
    return 0 if report.passed else 1


def _check_one(job: tuple) -> Report:
    """Check one mechanism at one configuration, by name (top-level, so worker processes can run it)."""
    from reference.registry import get

    name, label, config, backend, dtype, mode, seed = job
    shown = name if label is None else f"{name}[{label}]"
    try:
        report = check_mechanism(get(name), backend=backend, dtype=dtype, mode=mode, seed=seed, config=config)
    except Exception as err:  # a crash is a failure of that mechanism, reported, not hidden
        report = Report(mode=mode, backend=backend, dtype=dtype)
        report.results.append(TensorResult(shown, "(forward/backward)", (), float("inf"), float("inf"), "-", None,
                                           None, False, f"raised {type(err).__name__}: {err}"))
        return report
    for result in report.results:
        result.mechanism = shown
    return report


if __name__ == "__main__":
    sys.exit(main())
