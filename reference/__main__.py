"""``python -m reference list`` and ``python -m reference export NAME ... --out DIR``."""

from __future__ import annotations

import argparse
import sys

from .registry import all_mechanisms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="one line per mechanism: name, section, paper")
    export = sub.add_parser("export", help="write golden fixtures (NAME.npz and NAME.json)")
    export.add_argument("names", nargs="*", help="mechanisms (all by default)")
    export.add_argument("--out", required=True, help="output directory")
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = parser.parse_args(argv)

    if args.command == "list":
        mechanisms = all_mechanisms()
        width = max(len(name) for name in mechanisms)
        for name, m in mechanisms.items():
            print(f"{name.ljust(width)}  {m.section.ljust(12)}  {m.paper}")
        return 0
    from .fixtures import export_fixtures

    for path in export_fixtures(args.names, args.out, seed=args.seed, dtype=args.dtype):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
