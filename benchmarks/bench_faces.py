"""Face stage throughput against its kernel floor (the bare MediaPipe calls).

    .venv/bin/python benchmarks/bench_faces.py [--samples data/demo/samples.tsv] [--videos 24]

Runs the stage's shard driver on the first N videos of a samples table, then times a bare
loop of the same MediaPipe calls (BlazeFace + FaceMesh in tracking mode, one FaceMesh graph per
video, as the stage does) on the same decoded frames. Writes benchmarks/faces.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import h5py

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import stage_defaults  # noqa: E402
from vfer import faces  # noqa: E402
from vfer.runtime import set_threads  # noqa: E402
from vfer.samples import load_samples  # noqa: E402
from vfer.video import read_video  # noqa: E402


def bare_mediapipe(frames_per_video, params) -> float:
    """Seconds for the MediaPipe calls alone on already decoded frames."""
    import mediapipe as mp

    start = time.perf_counter()
    det = mp.solutions.face_detection.FaceDetection(model_selection=params["model_selection"],
                                                   min_detection_confidence=params["min_confidence"])
    for frames in frames_per_video:
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                             refine_landmarks=True) as mesh:
            for f in frames:
                det.process(f)
                mesh.process(f)
    det.close()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", default=str(REPO / "data/demo/samples.tsv"))
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--out", default=str(REPO / "benchmarks/faces.md"))
    args = ap.parse_args()
    set_threads(1)
    table = load_samples(args.samples, _labels(args.samples), None)
    videos = list(zip(table["video_id"], table["path"]))[: args.videos]
    params = stage_defaults("faces")

    # Warm-up: imports and model loading happen once per job in the workflow as well.
    faces.process_shard(videos[:1], *_tmp_outputs(), params, {})
    out, fail, sheet = _tmp_outputs()
    start = time.perf_counter()
    faces.process_shard(videos, out, fail, sheet, params, {})
    stage = time.perf_counter() - start
    with h5py.File(out) as f:
        n_frames = int(f.attrs["frames"])
        library = float(f.attrs["library_seconds"])
    decoded = [read_video(p)[0] for _, p in videos]
    bare = bare_mediapipe(decoded, params)

    rows = [
        ("videos", f"{len(videos)}", ""),
        ("frames", f"{n_frames}", ""),
        ("stage wall time (s)", f"{stage:.2f}", ""),
        ("stage frames/s (1 core)", f"{n_frames / stage:.1f}", ""),
        ("MediaPipe calls inside the stage (s)", f"{library:.2f}",
         f"{100 * library / stage:.0f}% of the stage"),
        ("bare MediaPipe loop (s)", f"{bare:.2f}", f"{n_frames / bare:.1f} frames/s"),
        ("stage / bare MediaPipe loop", f"{stage / bare:.2f}", "goal <= 1.3"),
    ]
    lines = ["# Face stage benchmark", "",
             f"`python benchmarks/bench_faces.py --videos {args.videos}` on "
             f"{platform.processor() or platform.machine()}, one thread, "
             f"detector {params['detector']}, landmarks {params['landmarks']}, "
             f"crops {params['size'][0]}x{params['size'][1]}.", "",
             "| measure | value | note |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _labels(path: str) -> list[str]:
    import pandas as pd

    return sorted(set(pd.read_csv(path, sep="\t", dtype=str)["label"]))


def _tmp_outputs() -> tuple[str, str, str]:
    d = Path(tempfile.mkdtemp(prefix="bench_faces_"))
    return str(d / "f.h5"), str(d / "f.tsv"), str(d / "f.png")


if __name__ == "__main__":
    sys.exit(main())
