"""Input kinds: what a network branch reads per segment from the stage files (docs/networks.md).

Every kind gives, per video, a list of *items* (face crops, flow images, dynamic images, or
landmark vectors) and an S x T matrix saying which items form each segment's time steps:

| kind          | items (stage file)                       | T per segment        |
|---------------|------------------------------------------|----------------------|
| frames        | face crops (faces), grouped by segments  | segment length L     |
| flow          | flow images (flow) of the segment pairs  | L - 1 (flow i = frames i, i + 1) |
| dynamic_rgb   | dynamic images of frames (dynamic)       | 1                    |
| dynamic_flow  | dynamic images of flows (dynamic)        | 1                    |
| landmarks     | similarity-normalised FaceMesh points    | L (152 x 2 per step) |

Flow-like kinds also give, per item, where zero flow lies in the x and y channels (a
fraction of 255), so that a horizontal flip can negate the x flow exactly, including for
min-max scaled dynamic images of flows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from vfer.nets.registry import INPUTS
from vfer.store import FLOW_ZERO, DynamicFile, FacesFile, FlowFile, SegmentsFile


class Frames:
    """Face crops grouped by the segments."""

    def __init__(self, files: Mapping[str, str]):
        self.faces, self.segments = FacesFile(files["faces"]), SegmentsFile(files["segments"])

    def videos(self) -> list[str]:
        return self.segments.videos()

    def index(self, video_id: str) -> np.ndarray:
        return self.segments.segment_index(video_id)

    def items(self, video_id: str, index: np.ndarray) -> np.ndarray:
        return self.faces.frames(video_id, index)

    def zero(self, video_id: str, index: np.ndarray) -> None:
        return None

    def close(self) -> None:
        self.faces.close()
        self.segments.close()


class Landmarks(Frames):
    """Per frame, 152 FaceMesh points similarity-aligned to the video's mean shape (x, y in
    inter-ocular units): a 304-vector per time step."""

    def __init__(self, files: Mapping[str, str]):
        super().__init__(files)
        self._cache: dict[str, np.ndarray] = {}

    def items(self, video_id: str, index: np.ndarray) -> np.ndarray:
        from vfer.descriptors import LANDMARKS, normalise_landmarks

        if video_id not in self._cache:
            points = self.faces.landmarks(video_id)[self.faces.source_frame(video_id)]
            if not np.isfinite(points).all():
                raise ValueError(f"{self.faces.path}: {video_id} has no FaceMesh landmarks; "
                                 "landmark inputs need faces.detector mediapipe with "
                                 "landmarks: true")
            normalised = normalise_landmarks(points.astype(np.float64))[:, LANDMARKS, :2]
            self._cache = {video_id: normalised.reshape(len(points), -1).astype(np.float32)}
        return self._cache[video_id][np.asarray(index)]


class FlowImages:
    """Flow images grouped by each segment's frame pairs."""

    def __init__(self, files: Mapping[str, str]):
        self.flow = FlowFile(files["flow"])

    def videos(self) -> list[str]:
        return self.flow.videos()

    def index(self, video_id: str) -> np.ndarray:
        return self.flow.segment_pairs(video_id)

    def items(self, video_id: str, index: np.ndarray) -> np.ndarray:
        return self.flow.images(video_id, index)

    def zero(self, video_id: str, index: np.ndarray) -> np.ndarray:
        return np.full(np.shape(index) + (2,), FLOW_ZERO, np.float32)

    def close(self) -> None:
        self.flow.close()


class DynamicImages:
    """The dynamic image (or ordered flow map) of each segment."""

    def __init__(self, files: Mapping[str, str]):
        self.dynamic = DynamicFile(files["dynamic"])

    def videos(self) -> list[str]:
        return self.dynamic.videos()

    def index(self, video_id: str) -> np.ndarray:
        return self.dynamic.segment_images(video_id)

    def items(self, video_id: str, index: np.ndarray) -> np.ndarray:
        return self.dynamic.images(video_id, index)

    def zero(self, video_id: str, index: np.ndarray) -> np.ndarray | None:
        return self.dynamic.flow_zero(video_id, index)

    def close(self) -> None:
        self.dynamic.close()


class InputSource:
    """One input kind across the shard files of a dataset: ``shards`` lists, per shard, the
    stage -> path mapping the kind needs (vfer.nets.registry.INPUTS ``stages``)."""

    def __init__(self, kind: str, shards: list[Mapping[str, str | os.PathLike]]):
        meta = INPUTS.meta(kind)
        self.kind, self.flow_x, self.vector = kind, meta["flow_x"], meta["vector"]
        self._parts, self._video = [], {}
        try:
            for files in shards:
                missing = [s for s in meta["stages"] if s not in files]
                if missing:
                    raise ValueError(f"input {kind} needs {list(meta['stages'])} files, "
                                     f"missing {missing}")
                part = INPUTS.get(kind)({s: os.fspath(files[s]) for s in meta["stages"]})
                self._parts.append(part)
                for vid in part.videos():
                    self._video[vid] = part
        except BaseException:
            self.close()
            raise

    def videos(self) -> list[str]:
        return sorted(self._video)

    def index(self, video_id: str) -> np.ndarray:
        """S x T item indices of the video's segments."""
        return self._video[video_id].index(video_id)

    def items(self, video_id: str, index) -> np.ndarray:
        """Items at ``index`` (any shape of indices, repeats allowed): uint8 images
        (..., H, W, 3) or float32 vectors (..., D)."""
        index = np.asarray(index)
        flat = self._video[video_id].items(video_id, index.ravel())
        return flat.reshape(index.shape + flat.shape[1:])

    def zero(self, video_id: str, index) -> np.ndarray | None:
        """Where zero flow lies in the x and y channels of each item (..., 2), or None."""
        if not self.flow_x:
            return None
        index = np.asarray(index)
        return self._video[video_id].zero(video_id, index.ravel()).reshape(index.shape + (2,))

    def close(self) -> None:
        for part in self._parts:
            part.close()

    def __enter__(self) -> InputSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def group_inputs(named: Mapping[str, list[str]]) -> dict[str, list[dict[str, str]]]:
    """Named input lists "<branch>__<stage>" (one file per shard, e.g. a rule's
    ``snakemake.input``) as {branch: [{stage: path} per shard]}."""
    out: dict[str, dict[str, list[str]]] = {}
    for key in named.keys():
        if "__" in key:
            branch, stage = key.split("__", 1)
            out.setdefault(branch, {})[stage] = list(named[key])
    return {b: [dict(zip(stages, paths)) for paths in zip(*stages.values())]
            for b, stages in out.items()}
