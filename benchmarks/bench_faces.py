"""Face stage against its kernel floor: the stage's shard driver on one shard of demo videos
(decoding, detection, tracking, alignment, crops, HDF5 output) against the library calls it
exists to make, timed alone: decoding the videos (OpenCV) and a bare loop of the same MediaPipe
calls (BlazeFace + FaceMesh in tracking mode, one FaceMesh graph per video, as the stage does)
on the decoded frames. One thread, as the faces rule runs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py

from benchmarks.common import REPO, Row, compare, demo_config, timed
from vfer import faces
from vfer.runtime import set_threads
from vfer.samples import load_samples
from vfer.video import read_video

TARGET = 1.2


def bare_mediapipe(frames_per_video, params) -> None:
    import mediapipe as mp

    det = mp.solutions.face_detection.FaceDetection(
        model_selection=params["model_selection"], min_detection_confidence=params["min_confidence"])
    for frames in frames_per_video:
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                             refine_landmarks=True) as mesh:
            for f in frames:
                det.process(f)
                mesh.process(f)
    det.close()


def measure(run: Path, repeat: int = 3) -> list[Row]:
    config = demo_config()
    params = config["faces"]
    set_threads(1)
    table = load_samples(REPO / config["samples"], config["classes"], None)
    videos = list(zip(table["video_id"], table["path"]))[: config["shard_size"]]
    with tempfile.TemporaryDirectory(prefix="bench_faces_") as tmp:
        out = [str(Path(tmp) / n) for n in ("f.h5", "f.tsv", "f.png")]
        faces.process_shard(videos[:1], *out, params, {})  # warm-up: imports, model loading
        decoded = [read_video(p)[0] for _, p in videos]

        def floor():
            for _, p in videos:
                read_video(p)
            bare_mediapipe(decoded, params)

        stage, bare, ratio = compare(lambda: faces.process_shard(videos, *out, params, {}),
                                     floor, repeat)
        with h5py.File(out[0]) as f:
            n = int(f.attrs["frames"])
    mediapipe = min(timed(bare_mediapipe, decoded, params) for _ in range(2))
    return [Row("faces", f"stage frames/s ({len(videos)} videos, {n} frames, 1 thread)",
                n / stage, "frames/s"),
            Row("faces", "bare decoding + MediaPipe frames/s", n / bare, "frames/s",
                note=f"MediaPipe alone {n / mediapipe:.1f} frames/s"),
            Row("faces", "stage / kernel floor (decoding + MediaPipe)", ratio, "x", TARGET,
                f"median of {repeat} interleaved runs; the stage also tracks, aligns, crops "
                "and writes")]
