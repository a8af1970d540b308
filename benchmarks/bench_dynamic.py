"""Dynamic-image stage against its kernel floor: the shard driver (read crops and segments,
rank-pool, scale to uint8, write) against the library calls it exists to make, timed alone:
the h5py reads of the crops and segment indices, and the rank pooling (approximate: one
weighted sum per segment) of the same frames in memory."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import Row, best_of, compare, demo_config, shard_paths
from vfer import dynamic
from vfer.store import FacesFile, SegmentsFile
from vfer.runtime import set_threads

TARGET = 1.2


def measure(run: Path, repeat: int = 21) -> list[Row]:
    params = demo_config()["dynamic"]["rgb"]
    set_threads(1)
    paths = shard_paths(run)

    def read():
        with FacesFile(paths["faces"]) as faces, SegmentsFile(paths["segments"]) as segs:
            return [s for vid in segs.videos() for s in dynamic.video_sequences(
                "rgb", params, vid, faces, segs, None)[0]]

    stacks = read()
    with tempfile.TemporaryDirectory(prefix="bench_dynamic_") as tmp:
        def stage():
            dynamic.process_shard("rgb", str(paths["faces"]), str(paths["segments"]), None,
                                  str(Path(tmp) / "d.h5"), params, {})

        def floor():
            dynamic.pool(read(), params["method"], params["C"], params["epsilon"])

        stage_s, floor_s, ratio = compare(stage, floor, repeat)
    pooling = best_of(5, dynamic.pool, stacks, params["method"], params["C"], params["epsilon"])
    n = len(stacks)
    return [Row("dynamic_rgb", f"stage dynamic images/s ({n} segments, {params['method']})",
                n / stage_s, "images/s"),
            Row("dynamic_rgb", "bare h5py reads + rank pooling images/s", n / floor_s,
                "images/s", note=f"rank pooling alone {n / pooling:.0f} images/s"),
            Row("dynamic_rgb", "stage / kernel floor (h5py reads + rank pooling)", ratio, "x",
                TARGET, f"median of {repeat} interleaved runs; the stage also scales to uint8 "
                "and writes")]
