"""kill -9 of snakemake and its jobs during faces, flow, training and evaluation; the documented
resume command (README, 'Resuming') finishes the run, redoes only unfinished jobs and gives the
metrics of an uninterrupted run."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.tiny import command, planned, prepare, snakemake

pytestmark = pytest.mark.workflow
STAGES = ["faces", "flow", "train", "evaluate"]


def marked_incomplete(workdir: Path) -> set[Path]:
    """Outputs of jobs that snakemake started and did not see finish (.snakemake/incomplete)."""
    root = workdir / ".snakemake/incomplete"
    marked = set()
    for path in root.rglob("*"):
        if path.is_file() and path.name != "migration_underway":
            parts = path.relative_to(root).parts
            encoded = "".join(p.removeprefix("@") for p in parts)
            marked.add((workdir / base64.urlsafe_b64decode(encoded).decode()).resolve())
    return marked


def finished_outputs(workdir: Path) -> dict[Path, int]:
    """Every complete file under results/ and its modification time."""
    partial = marked_incomplete(workdir)
    return {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("*")
            if p.is_file() and not p.name.endswith(".partial") and p.resolve() not in partial}


def alive(pgid: int) -> list[int]:
    """Processes of the group that are still running (zombies excluded)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def kill_during(workdir: Path, rule: str, args: list[str]) -> None:
    """Start snakemake, wait until a job of ``rule`` is running, kill -9 the whole group."""
    proc = subprocess.Popen(command(workdir, *args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while not list((workdir / "logs" / rule).rglob("*.log")):
            assert proc.poll() is None, f"snakemake ended before a {rule} job started"
            assert time.monotonic() < deadline, f"no {rule} job started"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for _ in range(100):
        if not alive(proc.pid):
            break
        time.sleep(0.1)
    assert not alive(proc.pid), "job processes survived kill -9 of their group"


def test_killed_runs_resume_without_losing_finished_work(run, tmp_path):
    workdir = prepare(tmp_path)
    finished: dict[Path, int] = {}
    resume = ["--rerun-incomplete"]
    for k, rule in enumerate(STAGES):
        kill_during(workdir, rule, resume if k else [])
        locked = snakemake(workdir, *resume)  # the kill left snakemake's lock behind
        assert locked.returncode != 0 and "cannot be locked" in locked.stderr, (rule, locked.stderr[-2000:])
        assert snakemake(workdir, "--unlock").returncode == 0
        plan = planned(snakemake(workdir, "-n", *resume).stdout)
        assert plan.get(rule), f"killed during {rule}, yet no {rule} job is left: {plan}"
        now = finished_outputs(workdir)
        assert all(now.get(p) == t for p, t in finished.items()), "finished work was redone"
        finished.update(now)
    result = snakemake(workdir, *resume)
    assert result.returncode == 0, result.stderr[-3000:]
    after = finished_outputs(workdir)
    redone = sorted(str(p) for p, t in finished.items() if after.get(p) != t)
    assert not redone, f"finished outputs were rewritten: {redone}"
    assert not list((workdir / "results").rglob("*.partial"))
    for metrics in (run / "results/experiments").glob("*/metrics.json"):
        resumed = workdir / metrics.relative_to(run)
        assert resumed.read_bytes() == metrics.read_bytes(), metrics.parent.name
