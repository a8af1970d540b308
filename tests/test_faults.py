"""Faults that must never give a silent wrong result, and their documented recoveries: a flow
shard without any motion, damaged intermediate files (README, 'Damaged files'), and a
snakemake killed alone while its jobs run (README, 'Resuming')."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from tests.conftest import stage_defaults
from tests.tiny import SNAKEMAKE, command, snakemake
from vfer import flow
from vfer.store import FacesFile, SegmentsFile

REPO = Path(__file__).resolve().parents[1]


# --- item 3: a flow shard whose flows are all zero -------------------------------------------

def texture(size=48, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.normal(size=(size, size)).astype(np.float32), (0, 0), 2.0)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def shard(tmp_path, videos: dict[str, np.ndarray]) -> tuple[Path, Path]:
    """A faces file and a segments file (segments of 4 frames) holding ``videos``."""
    faces, segments = tmp_path / "faces.h5", tmp_path / "segments.h5"
    with FacesFile.create(faces, {"method": "none"}) as f, \
            SegmentsFile.create(segments, {"method": "windows"}) as s:
        for video_id, gray in videos.items():
            n = len(gray)
            f.write_video(video_id, np.repeat(gray[..., None], 3, axis=-1),
                          np.zeros((n, 4), np.float32), np.ones(n, np.float32),
                          np.zeros((n, 2, 2), np.float32), np.zeros((n, 478, 3), np.float32),
                          np.ones(n, bool), np.arange(n, dtype=np.int32),
                          np.arange(n, dtype=np.int32), {"path": f"{video_id}.avi"})
            rows = [np.minimum(np.arange(i, i + 4), n - 1) for i in range(0, max(n - 3, 1), 4)]
            s.write_video(video_id, np.array(rows), n)
    return faces, segments


def moving(n=8):
    """A texture shifted one pixel right per frame."""
    img = texture()
    return np.stack([np.roll(img, t, axis=1) for t in range(n)])


def run_flow(faces, segments, out, params=None, method="farneback"):
    params = stage_defaults("flow")[method] if params is None else params
    flow.process_shard(str(faces), str(segments), str(out), method, params, 2.0, False, {})


def test_moving_frames_give_a_flow_shard(tmp_path):
    faces, segments = shard(tmp_path, {"a": moving(), "still_one_frame": moving(1)})
    run_flow(faces, segments, tmp_path / "flow.h5")
    with h5py.File(tmp_path / "flow.h5") as f:
        assert f["a"]["images"][..., 0].mean() > 128  # rightward motion: d_x > 0
        assert np.all(f["still_one_frame"]["images"][..., :2] == 128)  # padding: zero flow


def test_parameters_that_make_no_flow_stop_the_shard_naming_them(tmp_path, monkeypatch):
    faces, segments = shard(tmp_path, {"a": moving(), "b": moving(5)})
    monkeypatch.setattr(flow, "farneback", lambda a, b, **p: np.zeros(a.shape + (2,), np.float32))
    params = {"levels": 3, "winsize": 15}
    with pytest.raises(flow.NoFlowError) as err:
        run_flow(faces, segments, tmp_path / "flow.h5", params)
    # 'a' has pairs (0,1), (1,2), (2,3), (4,5), (5,6), (6,7); 'b' has (0,1), (1,2), (2,3):
    # 9 computed pairs, all joining different frames
    assert str(err.value) == (
        f"{tmp_path / 'flow.h5'}: all 9 frame pairs computed with flow method farneback "
        "{'levels': 3, 'winsize': 15} have exactly zero flow; 9 of them join different frames, "
        "so these parameters make no flow: check flow.farneback in the config (docs/methods.md)")
    assert not list(tmp_path.glob("flow.h5*"))  # no file that looks finished


def test_a_shard_of_still_videos_stops_naming_the_faces_file(tmp_path):
    still = np.repeat(texture()[None], 6, axis=0)
    faces, segments = shard(tmp_path, {"a": still})
    params = {"alpha": 0.03, "iterations": 5, "warps": 1, "levels": 2, "min_size": 16,
              "backend": "numpy"}  # Horn-Schunck gives exactly zero flow between equal frames
    with pytest.raises(flow.NoFlowError, match=r"all 3 frame pairs computed with flow method "
                       r"horn_schunck .* their two frames are identical \(still videos, or one "
                       rf"face crop repeated\): check the videos and the contact sheet of "
                       rf"{faces}$"):
        run_flow(faces, segments, tmp_path / "flow.h5", params, "horn_schunck")


# --- item 16: snakemake killed alone; its jobs stop; the documented resume finishes ------------

def group_alive(pgid: int) -> list[int]:
    """Processes of the process group that still run (zombies excluded)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.workflow
def test_jobs_stop_when_only_snakemake_is_killed_and_the_resume_gives_the_same_metrics(
        run, tmp_path):
    from vfer.runtime import read_job_log

    workdir = tmp_path / "run"
    shutil.copytree(run, workdir, symlinks=True)
    for made in ("models/temporal", "models/spatial", "features/temporal", "features/spatial",
                 "experiments/temporal", "experiments/spatial", "experiments/fused"):
        shutil.rmtree(workdir / "results" / made)  # 4 training jobs and what follows them
    log = workdir / "logs/train/temporal/fold0.log"
    proc = subprocess.Popen(command(workdir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while (job := read_job_log(log) if log.exists() else None) is None \
                or job.state != "running":
            assert proc.poll() is None, "snakemake ended before the training job started"
            assert time.monotonic() < deadline, "no training job started"
            time.sleep(0.05)
        assert group_alive(proc.pid) != [proc.pid]  # snakemake and its job(s)
        os.kill(proc.pid, signal.SIGKILL)  # snakemake alone, not its group
        proc.wait()
        killed = time.monotonic()
        while group_alive(proc.pid) and time.monotonic() - killed < 10:
            time.sleep(0.1)
        assert not group_alive(proc.pid), "jobs survived their snakemake"
    finally:
        for pid in group_alive(proc.pid):
            os.kill(pid, signal.SIGKILL)
    stopped = read_job_log(log)
    assert stopped.state == "stopped" and f"snakemake (pid {proc.pid})" in stopped.last
    # README, 'Resuming': unlock, then rerun what is incomplete
    assert snakemake(workdir, "--unlock").returncode == 0
    result = snakemake(workdir, "--rerun-incomplete")
    assert result.returncode == 0, result.stderr[-3000:]
    for metrics in (run / "results/experiments").glob("*/metrics.json"):
        resumed = workdir / metrics.relative_to(run)
        assert resumed.read_bytes() == metrics.read_bytes(), metrics.parent.name


# --- items 7 and 8: damaged intermediate files, named by file and stage; the recovery ----------

def flip_a_byte(path: Path, dataset: str) -> None:
    """Invert one byte inside the first chunk of ``dataset`` of the file's first video, as a
    failing disk would: the file keeps its size and its modification time."""
    with h5py.File(path) as f:
        offset = f[next(iter(f))][dataset].id.get_chunk_info(0).byte_offset
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[offset + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def vfer(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfer", *args], cwd=workdir,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.workflow
def test_damaged_files_are_named_by_file_and_stage_and_the_recovery_restores_the_metrics(
        run, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(run, work, symlinks=True)
    key = next((work / "results/flow").iterdir()).name
    damaged = {"faces": ("results/faces/s0000.h5", "frames"),
               "flow": (f"results/flow/{key}/s0001.h5", "images"),
               "features": ("results/features/temporal/fold0.h5", "features")}
    for path, dataset in damaged.values():
        size = (work / path).stat().st_size
        flip_a_byte(work / path, dataset)
        assert (work / path).stat().st_size == size
    check = vfer(work, "check", "results")
    assert check.returncode == 1
    for stage, (path, _) in damaged.items():
        assert f"damaged: {path}: {path}: damaged {stage} file (" in check.stdout, check.stdout
    # The next run that reads each file stops with the file, the stage and the recovery, in
    # the job's log and on snakemake's console.
    readers = {"features": "results/experiments/temporal/metrics.json",
               "flow": "results/preview/s0001.png", "faces": f"results/flow/{key}/s0000.h5"}
    for stage, target in readers.items():
        path = damaged[stage][0]
        result = snakemake(work, "--force", target)
        assert result.returncode != 0
        assert re.search(rf"^logs/\S+\.log: vfer\.store\.StageFileError: {re.escape(path)}: "
                         rf"damaged {stage} file \(.*\); `vfer check results --fix` removes "
                         r"damaged outputs; then rerun snakemake$", result.stderr, re.M), \
            result.stderr[-3000:]
    # README, 'Damaged files': one command sequence
    fixed = vfer(work, "check", "results", "--fix")
    assert fixed.returncode == 0 and fixed.stdout.count("removed results/") == 3, fixed.stdout
    result = snakemake(work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert vfer(work, "check", "results").returncode == 0
    metrics = sorted((run / "results/experiments").glob("*/metrics.json"))
    assert len(metrics) == 4
    for path in metrics:
        assert (work / path.relative_to(run)).read_bytes() == path.read_bytes(), path.parent.name
    # recomputed features files are byte-identical too (README, 'Rerunning part of the workflow')
    features = sorted((run / "results/features").glob("*/*.h5"))
    assert len(features) == 10
    for path in features:
        assert (work / path.relative_to(run)).read_bytes() == path.read_bytes(), path
