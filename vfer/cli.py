"""Command line: ``python -m vfer <command>`` (or ``vfer <command>`` once installed)."""

from __future__ import annotations

import argparse
import sys

from vfer import BASIC_CLASSES, __version__


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


def _config_classes(path: str) -> list[str] | None:
    """The ``classes`` of a config file (None if it has none), read as data with safe_load."""
    from vfer.config import ConfigError, read_yaml
    from vfer.manifest import ManifestError

    try:
        config = read_yaml(path)
    except ConfigError as exc:
        raise ManifestError(str(exc)) from None
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


def _check(args: argparse.Namespace) -> int:
    from vfer.store import check_tree

    damaged = check_tree(args.root)
    for path, reason in damaged:
        print(f"damaged: {path}: {reason}")
        if args.fix:
            path.unlink()
            print(f"removed {path}; the next snakemake run recomputes it")
    if not damaged:
        print(f"every stage file under {args.root} reads back whole")
    return 1 if damaged and not args.fix else 0


def _status(args: argparse.Namespace) -> int:
    """The latest snakemake run's step count, then every job that runs (with its log's last
    line: videos done, training step and loss), failed or stopped; --all adds finished ones."""
    import re
    from datetime import datetime
    from pathlib import Path

    from vfer.runtime import job_logs

    root = Path(args.workdir)
    runs = sorted((root / ".snakemake/log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    if runs:
        steps = re.findall(r"^(\d+ of \d+ steps \(\d+%\) done)", runs[-1].read_text(), re.M)
        print(f"latest snakemake run ({runs[-1].relative_to(root)}): "
              f"{steps[-1] if steps else 'no step done yet'}")
    jobs = job_logs(root / "logs")
    now = datetime.now()
    for job in jobs:
        if job.state == "finished" and not args.all:
            continue
        took = str(now - job.started).split(".")[0] if job.state == "running" else ""
        print(f"{job.state:<10} {took:>8}  {job.path.relative_to(root)}: {job.last}")
    running = sum(j.state == "running" for j in jobs)
    print(f"{running} job(s) running, {sum(j.state == 'finished' for j in jobs)} finished, "
          f"{sum(j.state in ('failed', 'stopped', 'unfinished') for j in jobs)} failed, stopped "
          f"or unfinished (logs under {root / 'logs'})")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from vfer.bundle import BundleError
    from vfer.prediction import predict

    try:
        table = predict(args.model, args.inputs, out=args.output, device=args.device,
                        batch=args.batch, keep_work=args.keep_work)
    except (BundleError, ValueError) as exc:
        print(f"vfer predict: error: {exc}", file=sys.stderr)
        return 2
    failed = int((table["failure"] != "").sum())
    print(f"{len(table)} videos, {len(table) - failed} classified, {failed} failed: "
          f"{args.output}/predictions.tsv, {args.output}/segments.tsv, "
          f"{args.output}/timelines/")
    if failed == len(table):
        print(f"vfer predict: error: no video was classified (reasons: "
              f"{args.output}/predictions.tsv, {args.output}/predict.log)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vfer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo-data", help="generate the demo dataset (videos + samples.tsv)")
    p.add_argument("outdir", help="folder to write the videos and samples.tsv into")
    p.add_argument("--seed", type=int, default=0,
                   help="the output depends only on the seed (default: 0)")
    p.add_argument("--subjects", type=int, default=10, help="synthetic subjects (default: 10)")
    p.add_argument("--clips", type=int, default=2, help="clips per subject and class")
    p.add_argument("--classes", nargs="+", default=list(BASIC_CLASSES),
                   help="expressions to animate (default: the six basic ones)")
    p.add_argument("--processes", type=int, default=None, help="worker processes (default: all cores)")
    p.set_defaults(func=_demo_data)

    from vfer.manifest import LAYOUTS

    p = sub.add_parser("manifest", help="build a samples table from a dataset folder")
    p.add_argument("root", help="the dataset folder")
    p.add_argument("--layout", required=True, choices=sorted(LAYOUTS),
                   help="how the dataset names its files (see README, Running on your own data)")
    p.add_argument("-o", "--output", required=True, help="samples table to write (TSV)")
    p.add_argument("--classes", nargs="+", default=None,
                   help="classes to keep (default: the config's, else the six basic ones)")
    p.add_argument("--config", default=None, help="take the classes from this config file")
    p.add_argument("--labels", default=None, help="baum1s: CSV/TSV with columns clip, label")
    p.add_argument("--csv", default=None, help="generic: CSV/TSV with path, label, subject")
    p.add_argument("--modality", default="auto", choices=["auto", "all", "01", "02"],
                   help="ravdess: one file per recording (auto: video-only 02, else "
                        "audio-video 01), only 01 or 02, or all (both copies of a recording)")
    p.add_argument("--ignore-unmatched", action="store_true",
                   help="leave out (and list) video files that do not match the layout")
    p.set_defaults(func=_manifest)

    p = sub.add_parser("check", help="read every stage file back (checksums); list damaged ones")
    p.add_argument("root", nargs="?", default="results", help="folder to check (default: results)")
    p.add_argument("--fix", action="store_true",
                   help="remove damaged files so that the next snakemake run recomputes them")
    p.set_defaults(func=_check)

    p = sub.add_parser("status", help="progress of the running jobs, read from their logs")
    p.add_argument("workdir", nargs="?", default=".", help="the workflow's folder (default: .)")
    p.add_argument("--all", action="store_true", help="list finished jobs too")
    p.set_defaults(func=_status)

    p = sub.add_parser("predict", help="predict new videos with a final model's bundle")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video files, image-sequence folders, folders of videos, or a samples "
                        "table (.tsv/.csv with a path column)")
    p.add_argument("--model", required=True,
                   help="the bundle folder (results/final/<experiment>), verified before use")
    p.add_argument("-o", "--output", default="predictions",
                   help="folder for predictions.tsv, segments.tsv, timelines/ (default: "
                        "predictions)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="torch device (default: auto, CUDA when torch sees it)")
    p.add_argument("--batch", type=int, default=32,
                   help="videos processed together per shard (default: 32)")
    p.add_argument("--keep-work", action="store_true",
                   help="keep the stage files of the inputs (under OUTPUT/work)")
    p.set_defaults(func=_predict)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
