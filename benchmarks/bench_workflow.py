"""The demo workflow from scratch: wall time against the time jobs run (Snakemake's overhead),
peak memory per rule, cache bytes per input frame per stage, and dry-run time of large tables.

The run happens in ``benchmarks/workflow/`` (ignored by git) with links to config/ and data/,
so the repository's own results/ are left alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from benchmarks.common import REPO, Row, timed

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
RSS_TARGET_MB = 4096
FLOW_TARGET_KB = 30


def snakemake(workdir: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args],
                          capture_output=True, text=True, **kw)


def linked_workdir(workdir: Path) -> Path:
    """An empty folder where config/ and data/ link to the repository's."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    for name in ("config", "data"):
        (workdir / name).symlink_to(REPO / name)
    return workdir


def run_workflow(workdir: Path, cores: int) -> float:
    """Wall seconds of the whole demo workflow from scratch."""
    linked_workdir(workdir)
    start = time.perf_counter()
    done = snakemake(workdir, "--cores", str(cores))
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"the demo workflow failed:\n{done.stderr[-3000:]}")
    return wall


def job_table(workdir: Path) -> pd.DataFrame:
    """One row per job from Snakemake's benchmark files: rule, seconds, peak RSS, end time."""
    rows = []
    for path in (workdir / "benchmarks").rglob("*.tsv"):
        b = pd.read_csv(path, sep="\t").iloc[0]
        rows.append({"rule": path.relative_to(workdir / "benchmarks").parts[0], "s": float(b["s"]),
                     "max_rss": float(b["max_rss"]) if b["max_rss"] != "-" else np.nan,
                     "cpu_time": float(b["cpu_time"]), "end": path.stat().st_mtime})
    return pd.DataFrame(rows)


def busy_seconds(jobs: pd.DataFrame) -> float:
    """Length of the union of the jobs' [end - s, end] intervals: time when some job ran."""
    intervals = sorted(zip(jobs["end"] - jobs["s"], jobs["end"]))
    total, (lo, hi) = 0.0, intervals[0]
    for a, b in intervals[1:]:
        if a > hi:
            total, lo = total + hi - lo, a
        hi = max(hi, b)
    return total + hi - lo


def startup_by_rule(rules) -> dict[str, float]:
    """Per rule, a job's start-up: the interpreter and its script's imports (with Snakemake's
    script preamble), timed in fresh interpreters."""
    interpreter = min(timed(subprocess.run, [sys.executable, "-c", "pass"], check=True)
                      for _ in range(3))
    out = {}
    for rule in rules:
        script = REPO / "workflow/scripts" / f"{rule.split('_')[0]}.py"
        imports = [line.split("#")[0].rstrip() for line in script.read_text().splitlines()
                   if line.startswith(("from ", "import "))]  # without their comments
        code = ("import time; t = time.perf_counter(); import snakemake.script; "
                + "; ".join(imports) + "; print(time.perf_counter() - t)")
        out[rule] = interpreter + min(float(subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(3))
    return out


def input_frames(workdir: Path) -> int:
    total = 0
    for path in (workdir / "results/faces").glob("*.h5"):
        with h5py.File(path, "r") as f:
            total += sum(int(g.attrs["decoded_frames"]) for g in f.values())
    return total


def cache_rows(workdir: Path, frames: int) -> list[Row]:
    flows = [(f"flow ({d.name.rsplit('-', 1)[0]})", f"results/flow/{d.name}/*.h5")
             for d in sorted((workdir / "results/flow").iterdir())]  # one per method in use
    stages = [("faces", "results/faces/*.h5"), ("segments", "results/segments/*.h5"), *flows,
              ("dynamic_rgb", "results/dynamic/rgb/*/*.h5"), ("train", "results/models/*/*"),
              ("extract", "results/features/*/*.h5")]
    rows = []
    for stage, pattern in stages:
        files = list((workdir).glob(pattern))
        kb = sum(p.stat().st_size for p in files) / frames / 1024
        flow = stage.startswith("flow")
        target = FLOW_TARGET_KB if flow else None
        note = "112x112 crops, bound 2 px, gzip-1 uint8 images" if flow else \
            ("112x112x3 crops stored uncompressed, landmarks, boxes" if stage == "faces" else "")
        rows.append(Row("cache", f"{stage}: bytes per input frame", kb, "KB", target, note))
    return rows


def dry_run_rows(n_videos: list[int], scratch: Path) -> list[Row]:
    """Seconds of `snakemake -n` for generated samples tables (empty files: -n reads none)."""
    rows = []
    for n in n_videos:
        workdir = scratch / f"dry{n}"
        workdir.mkdir(parents=True)
        (workdir / "config").symlink_to(REPO / "config")
        videos = workdir / "videos"
        videos.mkdir()
        classes = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
        table = pd.DataFrame({"video_id": [f"v{i:05d}" for i in range(n)],
                              "path": [f"videos/v{i:05d}.avi" for i in range(n)],
                              "label": [classes[i % 6] for i in range(n)],
                              "subject": [f"S{i % 100:03d}" for i in range(n)]})
        for p in table["path"]:
            (workdir / p).touch()
        table.to_csv(workdir / "samples.tsv", sep="\t", index=False)
        start = time.perf_counter()
        done = snakemake(workdir, "-n", "--cores", "2", "--quiet", "rules", "--config",
                         f"samples={workdir / 'samples.tsv'}")
        seconds = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"dry run of {n} videos failed:\n{done.stderr[-3000:]}")
        jobs = int(done.stdout.split("total")[1].split()[0]) if "total" in done.stdout else 0
        target = 30.0 if n == 10000 else None
        rows.append(Row("dry run", f"snakemake -n, {n:,} videos ({jobs:,} jobs)", seconds, "s",
                        target, "100 subjects, 5 subject groups, demo config"))
    return rows


def measure(workdir: Path, cores: int = 2) -> tuple[list[Row], pd.DataFrame]:
    wall = run_workflow(workdir, cores)
    jobs = job_table(workdir)
    busy = busy_seconds(jobs)
    startup = startup_by_rule(sorted(set(jobs["rule"])))
    startup_total = sum(startup[r] for r in jobs["rule"])
    rows = [
        Row("workflow", f"demo wall time (--cores {cores}, {len(jobs)} jobs)", wall, "s"),
        Row("workflow", "time with no job running (Snakemake's own work), share of wall time",
            100 * (wall - busy) / wall, "%", 10.0,
            f"{wall - busy:.1f} s of {wall:.1f} s: DAG, scheduling, job launch"),
        Row("workflow", f"sum of job times / ({cores} cores x wall time)",
            100 * jobs["s"].sum() / (cores * wall), "%", None, "core utilisation"),
        Row("workflow", "job start-up (interpreter + imports), share of all job time",
            100 * startup_total / jobs["s"].sum(), "%", None,
            f"{startup_total:.0f} s of {jobs['s'].sum():.0f} s, inside the job times"),
    ]
    for rule, group in jobs.groupby("rule"):
        rows.append(Row("peak RSS", f"{rule} ({len(group)} jobs, mean {group['s'].mean():.1f} s)",
                        group["max_rss"].max(), "MB", RSS_TARGET_MB,
                        f"start-up {startup[rule]:.1f} s per job"))
    rows += cache_rows(workdir, input_frames(workdir))
    with tempfile.TemporaryDirectory(prefix="vfer_dry_") as scratch:
        rows += dry_run_rows([1000, 10000], Path(scratch))
    return rows, jobs
