"""make bench: every cost of vfer next to its target, in benchmarks/RESULTS.md and
benchmarks/results.csv.

    .venv/bin/python -m benchmarks.bench [--cores 2] [--skip-workflow]

Runs the demo workflow from scratch in benchmarks/workflow/ (Snakemake's overhead, peak memory
per rule, cache sizes, dry-run time of large tables), the parse's cost before and after it
stopped importing torch (bench_parse), then each stage against its kernel floor on that run's
files (bench_faces, bench_flow, bench_dynamic, bench_features, bench_evaluate), each in its own
process, as the stages run as jobs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from benchmarks import (bench_dynamic, bench_evaluate, bench_faces, bench_features, bench_flow,
                        bench_parse, bench_workflow)
from benchmarks.common import REPO, Row

OUT = REPO / "benchmarks"


def fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 \
        else f"{value:.1f}"


def in_own_process(measure, run: Path) -> list[Row]:
    """``measure(run)`` in a fresh interpreter: what one stage's libraries leave running in a
    process does not slow the next stage measured (after bench_faces in the same process,
    bench_flow's Farneback stage read 1.41x its floor instead of 1.15x)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure, run).result()


def markdown(rows: list[Row], header: list[str]) -> str:
    lines = header + ["| section | measure | value | target | met | note |",
                      "|---|---|---|---|---|---|"]
    for r in rows:
        target = "" if r.target is None else f"<= {fmt(r.target)} {r.unit}"
        lines.append(f"| {r.section} | {r.measure} | {fmt(r.value)} {r.unit} | {target} | "
                     f"{r.met} | {r.note} |")
    missed = [r for r in rows if r.met == "no"]
    lines += ["", f"{sum(r.met == 'yes' for r in rows)} targets met, {len(missed)} missed."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--skip-workflow", action="store_true",
                    help="reuse benchmarks/workflow/ from an earlier run")
    args = ap.parse_args()
    start = time.perf_counter()
    run = OUT / "workflow"
    rows: list[Row] = []
    if args.skip_workflow:
        print("reusing", run, flush=True)
        rows += [Row(**{k: (None if pd.isna(v) else v) for k, v in r.items()})
                 for r in pd.read_csv(run / "rows.csv", keep_default_na=True)
                 .fillna({"note": ""}).to_dict("records")]
    else:
        print("demo workflow from scratch ...", flush=True)
        found, jobs = bench_workflow.measure(run, args.cores)
        rows += found
        jobs.to_csv(run / "jobs.csv", index=False)
        pd.DataFrame([r.__dict__ for r in found]).to_csv(run / "rows.csv", index=False)
    print("parse (before and after) ...", flush=True)
    rows += bench_parse.measure()
    for name, module in (("faces", bench_faces), ("flow", bench_flow),
                         ("dynamic", bench_dynamic), ("features", bench_features),
                         ("evaluate", bench_evaluate)):
        print(f"{name} ...", flush=True)
        rows += in_own_process(module.measure, run)
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    header = ["# vfer benchmarks", "",
              f"`make bench` on {platform.machine()} with {os.cpu_count()} cores"
              f" ({platform.processor() or 'CPU'}), "
              + (f"GPU {gpu}" if gpu else "no GPU") + f", {time.strftime('%Y-%m-%d')}; "
              f"{(time.perf_counter() - start) / 60:.1f} minutes. Stage ratios: the stage's "
              "wall time over its kernel floor (the bare library calls it exists to make, "
              "timed alone on the same inputs, one thread as the rules run). "
              "See benchmarks/NOTES.md for how each figure is measured and why a missed "
              "target is missed.", ""]
    (OUT / "RESULTS.md").write_text(markdown(rows, header))
    pd.DataFrame([{**r.__dict__, "met": r.met} for r in rows]).to_csv(OUT / "results.csv",
                                                                      index=False)
    print((OUT / "RESULTS.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
