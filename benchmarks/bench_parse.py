"""Parsing the workflow, before and after it stopped importing torch at parse time: the dry run
of the demo, a job's start-up as a cluster job pays it, and what the parse imports.

Every SLURM job runs snakemake again for its one job, which parses the whole workflow first, so
a job's start-up is its wall time (``snakemake --target-jobs`` in remote mode, as the SLURM
job step runs it) less its script's own time (the job's benchmark file). The job is ``folds``,
which reads only the samples table. "Before" is commit fc0398c (common.smk imported
vfer.features and vfer.models, hence torch), exported with ``git archive``; "after" is this
checkout. Both run with their own code and config on this checkout's demo data (data/demo).

    .venv/bin/python -m benchmarks.bench_parse
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import pandas as pd

from benchmarks.common import REPO, Row

BEFORE = "fc0398c"
HEAVY = ("torch", "mediapipe", "tensorflow")
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def export(rev: str, dest: Path) -> Path:
    """The files of commit ``rev`` in ``dest`` (git archive; needs the commit in the clone)."""
    done = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev],
                          capture_output=True)
    if done.returncode:
        sys.exit(f"benchmarks.bench_parse: cannot export commit {rev} (a shallow clone?): "
                 f"{done.stderr.decode().strip()}")
    with tarfile.open(fileobj=BytesIO(done.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def workdir(tree: Path, where: Path) -> Path:
    """A run folder with the tree's config/ and this checkout's data/."""
    where.mkdir(parents=True)
    (where / "config").symlink_to(tree / "config")
    (where / "data").symlink_to(REPO / "data")
    return where


def snakemake(tree: Path, run: Path, *args: str, python: tuple[str, ...] = ()
              ) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds and result of the tree's snakemake on ``run`` (its vfer first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, *python, SNAKEMAKE, "-s", str(tree / "Snakefile"), "-d", str(run),
           *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return seconds, done


def dry_run(tree: Path, run: Path) -> tuple[float, int]:
    """Seconds of `snakemake -n` and the number of jobs it plans."""
    seconds, done = snakemake(tree, run, "-n", "--cores", "2", "--quiet", "rules")
    return seconds, int(re.search(r"^total\s+(\d+)$", done.stdout, re.M)[1])


def job_startup(tree: Path, run: Path) -> tuple[float, float]:
    """Wall seconds of the folds job run as a cluster job runs it, and its script's seconds."""
    seconds, _ = snakemake(tree, run, "--target-jobs", "folds:", "--allowed-rules", "folds",
                           "--cores", "1", "--force-use-threads", "--force", "--mode", "remote",
                           "--nolock")
    script = float(pd.read_csv(run / "benchmarks/folds/folds.tsv", sep="\t")["s"].iloc[0])
    return seconds, script


def parse_imports(tree: Path, run: Path) -> list[str]:
    """The modules of torch, MediaPipe and TensorFlow that a dry run imports."""
    _, done = snakemake(tree, run, "-n", "--cores", "2", "--quiet", "rules",
                        python=("-X", "importtime"))
    modules = re.findall(r"^import time:.*\|\s*(\S+)$", done.stderr, re.M)
    if "vfer.samples" not in modules:
        sys.exit("benchmarks.bench_parse: -X importtime did not trace the parse")
    return [m for m in modules if m.split(".")[0] in HEAVY]


def measure(repeat: int = 5) -> list[Row]:
    """Both trees, interleaved ``repeat`` times (best of each), so that the shared machine's
    drifts hit both alike."""
    with tempfile.TemporaryDirectory(prefix="vfer_parse_") as scratch:
        trees = {f"before ({BEFORE})": export(BEFORE, Path(scratch) / "before"),
                 "after": REPO}
        runs = {name: workdir(tree, Path(scratch) / f"run-{i}")
                for i, (name, tree) in enumerate(trees.items())}
        dry = {name: [] for name in trees}
        job = {name: [] for name in trees}
        for _ in range(repeat):
            for name, tree in trees.items():
                dry[name].append(dry_run(tree, runs[name]))
                job[name].append(job_startup(tree, runs[name]))
        heavy = {name: parse_imports(tree, runs[name]) for name, tree in trees.items()}
    rows = []
    for name in trees:
        seconds, jobs = min(dry[name])
        wall, script = min(job[name], key=lambda r: r[0] - r[1])
        top = sorted({m.split(".")[0] for m in heavy[name]})
        rows += [
            Row("parse", f"snakemake -n on the demo ({jobs} jobs), {name}", seconds, "s", None,
                f"best of {repeat}"),
            Row("parse", f"a job's start-up (snakemake re-parses the workflow for it), {name}",
                wall - script, "s", None,
                f"folds as a cluster job: {wall:.1f} s wall less its script's {script:.1f} s"),
            Row("parse", f"modules of torch, mediapipe, tensorflow imported by the parse, {name}",
                len(heavy[name]), "modules", 0 if name == "after" else None,
                ", ".join(top) or "none"),
        ]
    return rows


if __name__ == "__main__":
    for row in measure():
        print(f"{row.measure}: {row.value:.3g} {row.unit} ({row.note})")
