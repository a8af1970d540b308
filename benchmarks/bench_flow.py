"""Flow stage against its kernel floor, per method: the shard driver (read crops and segments,
grayscale, the solver on every distinct pair, flow images, HDF5 output) on the first videos of
one demo shard, against a bare loop of the same solver calls on the same pairs. One thread, as
the flow rule runs; Horn-Schunck in numpy (the CPU default) and in torch."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from benchmarks.common import Row, demo_config, shard_paths, timed
from vfer import flow
from vfer.store import FacesFile, SegmentsFile
from vfer.runtime import set_threads

TARGET = 1.2


def load(faces_path, segments_path, videos):
    """Grayscale frames and distinct non-padding pairs of the first ``videos`` videos."""
    out = []
    with FacesFile(faces_path) as faces, SegmentsFile(segments_path) as segs:
        for vid in segs.videos()[:videos]:
            pairs, _ = flow.segment_pairs(segs.segment_index(vid))
            gray = flow.to_gray(faces.frames(vid))
            out.append((gray, pairs[pairs[:, 0] != pairs[:, 1]]))
    return out


def bare(method, params, data) -> None:
    """The solver calls alone."""
    if method == "horn_schunck":
        hs = dict(params)
        backend, device = flow.resolve_backend(hs.pop("backend"))
        set_threads(1, opencv=1)  # torch, if the backend just imported it: one thread
        for gray, pairs in data:  # in the stage's calls: its batch, split evenly
            batch = flow.pairs_per_batch(method, backend, device, gray.shape[1:])
            for k in flow.equal_calls(pairs, batch):
                flow.horn_schunck(gray[k[:, 0]], gray[k[:, 1]], backend, device, **hs)
        return
    if method == "farneback":
        for gray, pairs in data:
            for a, b in pairs:
                flow.farneback(gray[a], gray[b], **params)
        return
    solver = flow.tvl1_solver(**{k: v for k, v in params.items() if k != "backend"})
    for gray, pairs in data:
        for a, b in pairs:
            solver.calc(gray[a], gray[b], None)


def sub_shard(faces_path, segments_path, videos, tmp: Path) -> tuple[str, str]:
    """Copies of the first ``videos`` videos' crops and segments (prepared outside timing)."""
    sub_faces, sub_segs = tmp / "faces.h5", tmp / "segments.h5"
    with h5py.File(faces_path) as f, h5py.File(segments_path) as s, \
            h5py.File(sub_faces, "w") as fo, h5py.File(sub_segs, "w") as so:
        fo.attrs["stage"], so.attrs["stage"] = "faces", "segments"
        for vid in list(s)[:videos]:
            f.copy(f[vid], fo, vid)
            s.copy(s[vid], so, vid)
    return str(sub_faces), str(sub_segs)


def measure(run: Path, repeat: int = 3) -> list[Row]:
    config = demo_config()
    defaults, bound = config["flow"], float(config["flow"]["bound"])
    paths = shard_paths(run)
    set_threads(1, opencv=1)  # as the flow rule does with threads: 1
    plan = [("farneback", dict(defaults["farneback"]), 12),
            ("tvl1", dict(defaults["tvl1"]), 1),
            ("horn_schunck", {**defaults["horn_schunck"], "backend": "numpy"}, 4),
            ("horn_schunck", {**defaults["horn_schunck"], "backend": "torch"}, 4)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_flow_") as scratch:
        tmp = Path(scratch)
        for method, params, videos in plan:
            data = load(paths["faces"], paths["segments"], videos)
            n = sum(len(p) for _, p in data)
            sub_faces, sub_segs = sub_shard(paths["faces"], paths["segments"], videos, tmp)
            bare(method, params, data[:1])  # warm-up
            runs = []
            for _ in range(repeat):  # interleaved, so that drifts of the machine hit both alike
                cpu = time.process_time()
                b = timed(bare, method, params, data)
                b_cpu, cpu = time.process_time() - cpu, time.process_time()
                s = timed(flow.process_shard, sub_faces, sub_segs, str(tmp / "flow.h5"), method,
                          params, bound, False, {}, threads=1, store_raw=False)
                runs.append((s, b, time.process_time() - cpu, b_cpu))
            s, b = min(r[0] for r in runs), min(r[1] for r in runs)
            ratio = float(np.median([r[0] / r[1] for r in runs]))
            cpu_ratio = float(np.median([r[2] / r[3] for r in runs]))
            label = method + (f" ({params['backend']})" if method == "horn_schunck" else "")
            rows += [Row("flow", f"{label}: stage pairs/s ({n} pairs)", n / s, "pairs/s"),
                     Row("flow", f"{label}: bare solver pairs/s", n / b, "pairs/s"),
                     Row("flow", f"{label}: stage / kernel floor", ratio, "x", TARGET,
                         f"median of {repeat} interleaved runs"
                         + ("; the demo's method" if method == defaults["method"] else "")),
                     Row("flow", f"{label}: stage / kernel floor, CPU time", cpu_ratio, "x",
                         TARGET, "the stage reads the next video and writes in a second thread")]
    return rows
