"""Command line: ``python -m vfer <command>`` (or ``vfer <command>`` once installed)."""

from __future__ import annotations

import argparse
import sys

from vfer import BASIC_CLASSES


def _demo_data(args: argparse.Namespace) -> int:
    from vfer import demo

    table = demo.generate(args.outdir, seed=args.seed, subjects=args.subjects, clips=args.clips,
                          classes=tuple(args.classes), processes=args.processes)
    print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vfer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo-data", help="generate the demo dataset (videos + samples.tsv)")
    p.add_argument("outdir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subjects", type=int, default=10)
    p.add_argument("--clips", type=int, default=2, help="clips per subject and class")
    p.add_argument("--classes", nargs="+", default=list(BASIC_CLASSES))
    p.add_argument("--processes", type=int, default=None, help="worker processes (default: all cores)")
    p.set_defaults(func=_demo_data)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
