"""Command line: ``python -m vfer <command>`` (or ``vfer <command>`` once installed)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING

from vfer import BASIC_CLASSES

if TYPE_CHECKING:
    import yaml


def _demo_data(args: argparse.Namespace) -> int:
    from vfer import demo

    try:
        table = demo.generate(args.outdir, seed=args.seed, subjects=args.subjects,
                              clips=args.clips, classes=tuple(args.classes),
                              processes=args.processes)
    except demo.DemoArgumentError as exc:
        print(f"vfer demo-data: error: --{exc.name}: {exc.reason}", file=sys.stderr)
        return 2
    print(table)
    return 0


def _yaml_error(path: str, exc: yaml.MarkedYAMLError) -> str:
    """A YAML error as one line naming the file and the line."""
    line = f"{path} line {exc.problem_mark.line + 1}" if exc.problem_mark else path
    tag = re.match(r"could not determine a constructor for the tag '(.*)'$", exc.problem or "")
    if tag:
        name = tag[1].replace("tag:yaml.org,2002:", "!!")
        return (f"{line}: YAML tag {name!r} is refused (vfer reads configs with safe_load; a "
                "config file is data, not code)")
    context = f" ({exc.context})" if exc.context else ""
    return f"{line}: invalid YAML: {exc.problem}{context}"


def _config_classes(path: str) -> list[str] | None:
    """The ``classes`` of a config file (None if it has none), read as data with safe_load."""
    import yaml

    from vfer.manifest import ManifestError

    try:
        with open(path) as fh:
            config = yaml.safe_load(fh)
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the config: {exc.strerror}") from None
    except yaml.MarkedYAMLError as exc:
        raise ManifestError(_yaml_error(path, exc)) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: invalid YAML: {exc}") from None
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ManifestError(f"{path}: not a config: it holds a {type(config).__name__}, not a "
                            "mapping of settings")
    classes = config.get("classes")
    if classes is not None and not (isinstance(classes, list)
                                    and all(isinstance(c, str) for c in classes)):
        raise ManifestError(f"{path}: classes must be a list of class names, got {classes!r}")
    return classes


def _manifest(args: argparse.Namespace) -> int:
    import os

    from vfer import manifest

    out_dir = os.path.dirname(os.path.abspath(args.output))
    try:
        classes = args.classes
        if classes is None and args.config:
            classes = _config_classes(args.config)
        m = manifest.build(args.layout, args.root, classes, out_dir, args.ignore_unmatched,
                           labels=args.labels, csv=args.csv, modality=args.modality)
    except manifest.ManifestError as exc:
        print(f"vfer manifest: error: {exc}", file=sys.stderr)
        return 2
    manifest.write(m, args.output)
    for path in m.unmatched:
        print(f"ignored (does not match layout {args.layout}): {path}", file=sys.stderr)
    print(m.summary())
    print(f"wrote {args.output}")
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

    from vfer.manifest import LAYOUTS

    p = sub.add_parser("manifest", help="build a samples table from a dataset folder")
    p.add_argument("root", help="the dataset folder")
    p.add_argument("--layout", required=True, choices=sorted(LAYOUTS))
    p.add_argument("-o", "--output", required=True, help="samples table to write (TSV)")
    p.add_argument("--classes", nargs="+", default=None,
                   help="classes to keep (default: the config's, else the six basic ones)")
    p.add_argument("--config", default=None, help="take the classes from this config file")
    p.add_argument("--labels", default=None, help="baum1s: CSV/TSV with columns clip, label")
    p.add_argument("--csv", default=None, help="generic: CSV/TSV with path, label, subject")
    p.add_argument("--modality", default="all", choices=["all", "01", "02"],
                   help="ravdess: 01 audio-video, 02 video-only, or all")
    p.add_argument("--ignore-unmatched", action="store_true",
                   help="leave out (and list) video files that do not match the layout")
    p.set_defaults(func=_manifest)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
