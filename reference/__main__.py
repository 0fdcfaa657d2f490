"""``python -m reference list [--config NAME]`` and ``python -m reference export NAME ... [--config FIELD=VALUE ...] --out DIR``.

A usage error (an unknown name or field, a bad value, an unwritable ``--out``)
exits with status 2 and one line, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .registry import all_mechanisms, get, select


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="one line per mechanism: name, section, paper")
    listing.add_argument("--config", metavar="NAME",
                         help="print NAME's configuration fields (type, default, constraint) and edge configurations")
    export = sub.add_parser("export", help="write golden fixtures (NAME.npz and NAME.json)")
    export.add_argument("names", nargs="*", help="mechanisms (all by default)")
    export.add_argument("--out", required=True, help="output directory")
    export.add_argument("--seed", type=_non_negative, default=0)
    export.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    export.add_argument("--config", action="append", default=[], metavar="FIELD=VALUE",
                        help="a configuration field (repeatable)")
    args = parser.parse_args(argv)

    def usage_error(message: str) -> int:
        print(f"python -m reference {args.command}: {message}", file=sys.stderr)
        return 2

    if args.command == "list":
        if args.config:
            try:
                mechanism = get(args.config)
            except KeyError as err:
                return usage_error(str(err.args[0]))
            print(f"{mechanism.name}: {mechanism.paper}")
            if mechanism.config is None:
                print("(no configuration fields)")
                return 0
            print(mechanism.config.describe())
            if mechanism.defaults:
                print("this variant's defaults: " + ", ".join(f"{k}={v!r}" for k, v in mechanism.defaults.items()))
            if mechanism.realistic:
                print("realistic size (benchmarks): " + ", ".join(f"{k}={v!r}" for k, v in mechanism.realistic.items()))
            if mechanism.edge_configs:
                print("\nedge configurations (python -m gradients check NAME --edges):")
                for label, overrides in mechanism.edge_configs.items():
                    print(f"  {label}: " + (", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "(defaults)"))
            return 0
        mechanisms = all_mechanisms()
        width = max(len(name) for name in mechanisms)
        for name, m in mechanisms.items():
            print(f"{name.ljust(width)}  {m.section.ljust(12)}  {m.paper}")
        return 0

    from .fixtures import export_fixture

    try:
        chosen = select(args.names)
        for mechanism in chosen:
            if args.config and mechanism.config is None:
                raise ValueError(f"{mechanism.name} has no configuration fields")
            if mechanism.config is not None:
                mechanism.make_config(mechanism.config.parse(args.config))
    except KeyError as err:
        return usage_error(str(err.args[0]))
    except (ValueError, TypeError) as err:
        return usage_error(f"--config: {err}")
    out = Path(args.out)
    try:  # a real write, not os.access (which says yes to root everywhere)
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".oracle-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        return usage_error(f"--out {args.out}: cannot write there ({err.strerror})")
    for mechanism in chosen:
        fields = mechanism.config.parse(args.config) if mechanism.config is not None else None
        for path in export_fixture(mechanism, out, seed=args.seed, dtype=args.dtype, config=fields):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
