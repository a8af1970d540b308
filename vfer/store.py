"""Stage files: each stage's HDF5 layout, written and read by one class (docs/stages.md).

Every file has one group per video (``/<video_id>/<dataset>``) and provenance in its root
attrs (stage, method, params, hashes, vfer version). Every dataset carries a Fletcher-32
checksum, so a damaged chunk is an error naming the file, never a silent change of results.
Files are written under a temporary name and renamed when complete.

| class        | stage    | datasets per video                                             |
|--------------|----------|----------------------------------------------------------------|
| FacesFile    | faces    | frames, boxes, scores, eyes, landmarks, detected, source_frame, frame_index |
| SegmentsFile | segments | segment_index                                                  |
| FlowFile     | flow     | images, pairs, segment_pairs, [flow]                           |
| DynamicFile  | dynamic  | images, segment_images, [flow_zero], [images_reverse]          |
| FeaturesFile | features | features, [scores]                                             |
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np

import vfer
from vfer.io import atomic_path, canonical_json

#: Target chunk size in bytes for image-like datasets (10 KiB - 1 MiB per chunk).
CHUNK_BYTES = 256 * 1024
#: What to do about a damaged intermediate file.
RECOVERY = "`vfer check results --fix` removes damaged outputs; then rerun snakemake"


class StageFileError(OSError):
    """A stage file that is missing, damaged, or of the wrong stage; names file and stage."""


def write_array(group: h5py.Group, name: str, data: np.ndarray, compression: str | None = "lzf",
                level: int = 4) -> h5py.Dataset:
    """Write ``data`` chunked along its first axis (about CHUNK_BYTES per chunk) with a
    Fletcher-32 checksum, compressed with shuffle and ``lzf`` or ``gzip`` at ``level``, or
    uncompressed (``None``: for natural image crops, which lzf shrinks by ~10% while making
    every read 5x slower)."""
    data = np.ascontiguousarray(data)
    if data.size == 0 or data.ndim == 0:
        return group.create_dataset(name, data=data)
    per_row = max(1, data[0].nbytes)
    rows = int(np.clip(CHUNK_BYTES // per_row, 1, data.shape[0]))
    opts = {"compression_opts": level} if compression == "gzip" else {}
    return group.create_dataset(name, data=data, chunks=(rows,) + data.shape[1:],
                                compression=compression, shuffle=compression is not None,
                                fletcher32=True, **opts)


def set_attrs(obj: h5py.HLObject, values: Mapping) -> None:
    """Store attrs; dicts and lists as canonical JSON strings, None as "null"."""
    for key, value in values.items():
        if isinstance(value, (dict, list, tuple)):
            value = canonical_json(value)
        elif value is None:
            value = "null"
        obj.attrs[key] = value


class StageFile:
    """Base reader/writer: opens read-only (checking the stage) or creates atomically."""

    STAGE = ""

    def __init__(self, path: str | os.PathLike, _handle: h5py.File | None = None):
        self.path = os.fspath(path)
        if _handle is not None:
            self._f = _handle
            return
        try:
            self._f = h5py.File(self.path, "r")
        except FileNotFoundError:
            raise StageFileError(f"{self.path}: {self.STAGE} file not found") from None
        except OSError as exc:
            raise self._damaged(exc) from None
        found = self._f.attrs.get("stage")
        if found != self.STAGE:
            self._f.close()
            raise StageFileError(f"{self.path}: expected a '{self.STAGE}' file, found "
                                 f"stage={found!r}")

    @classmethod
    @contextlib.contextmanager
    def create(cls, path: str | os.PathLike, provenance: Mapping) -> Iterator[StageFile]:
        """A new file of this stage, renamed into place only when the block succeeds."""
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w", track_order=True) as f:
                set_attrs(f, {"stage": cls.STAGE, "vfer_version": vfer.__version__, **provenance})
                yield cls(path, _handle=f)

    def _damaged(self, exc: Exception) -> StageFileError:
        return StageFileError(f"{self.path}: damaged {self.STAGE} file ({exc}); {RECOVERY}")

    # -- reading --------------------------------------------------------------------------
    @property
    def attrs(self) -> h5py.AttributeManager:
        return self._f.attrs

    def json_attr(self, key: str):
        return json.loads(self._f.attrs[key])

    def videos(self) -> list[str]:
        return list(self._f)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._f

    def video_attrs(self, video_id: str) -> Mapping:
        return self._group(video_id).attrs

    def _group(self, video_id: str) -> h5py.Group:
        if video_id not in self._f:
            raise KeyError(f"{self.path}: no video {video_id!r} in this {self.STAGE} file")
        return self._f[video_id]

    def _has(self, video_id: str, name: str) -> bool:
        return name in self._group(video_id)

    def _read(self, video_id: str, name: str, index=None) -> np.ndarray:
        """A dataset, whole or at ``index`` (any order, repeats allowed); checksummed."""
        data = self._group(video_id)[name]
        try:
            if index is None:
                return data[()]
            index = np.asarray(index)
            unique, inverse = np.unique(index, return_inverse=True)
            return data[unique][inverse.reshape(index.shape)]
        except OSError as exc:
            raise self._damaged(exc) from None

    def _shape(self, video_id: str, name: str) -> tuple[int, ...]:
        return self._group(video_id)[name].shape

    def check(self) -> None:
        """Read every dataset once (verifying its checksum and, where a stage has one, its
        values: _verified); raise StageFileError if damaged."""
        for video_id in self.videos():
            for name in self._group(video_id):
                self._verified(video_id, name)

    def _verified(self, video_id: str, name: str) -> np.ndarray:
        """A whole dataset as its readers return it; a stage whose values can be checked
        overrides this."""
        return self._read(video_id, name)

    # -- writing --------------------------------------------------------------------------
    def _write(self, video_id: str, arrays: Mapping[str, np.ndarray],
               compression: Mapping[str, str | None] | None = None,
               attrs: Mapping | None = None) -> None:
        g = self._f.require_group(video_id)
        for name, data in arrays.items():
            if data is None:
                continue
            method = (compression or {}).get(name, "lzf")
            level = 1 if method == "gzip" else 4
            write_array(g, name, data, compression=method, level=level)
        if attrs:
            set_attrs(g, attrs)

    def set_attrs(self, values: Mapping) -> None:
        set_attrs(self._f, values)

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FacesFile(StageFile):
    """Eye-aligned face crops and tracking results of every video of a shard."""

    STAGE = "faces"

    def write_video(self, video_id: str, frames: np.ndarray, boxes: np.ndarray,
                    scores: np.ndarray, eyes: np.ndarray, landmarks: np.ndarray,
                    detected: np.ndarray, source_frame: np.ndarray, frame_index: np.ndarray,
                    attrs: Mapping) -> None:
        """frames T x H x W x 3 uint8 (uncompressed: every later stage reads them), boxes
        T x 4, scores T, eyes T x 2 x 2, landmarks T x 478 x 3 (NaN where absent), detected T,
        source_frame T (the frame whose crop each frame holds), frame_index T."""
        self._write(video_id, {"frames": frames, "boxes": boxes, "scores": scores, "eyes": eyes,
                               "landmarks": landmarks, "detected": detected,
                               "source_frame": source_frame, "frame_index": frame_index},
                    {"frames": None}, attrs)

    def frames(self, video_id: str, index=None) -> np.ndarray:
        return self._read(video_id, "frames", index)

    def n_frames(self, video_id: str) -> int:
        return self._shape(video_id, "frames")[0]

    def frame_shape(self, video_id: str) -> tuple[int, int]:
        return self._shape(video_id, "frames")[1:3]

    def landmarks(self, video_id: str) -> np.ndarray:
        return self._read(video_id, "landmarks")

    def source_frame(self, video_id: str) -> np.ndarray:
        return self._read(video_id, "source_frame")

    def detected(self, video_id: str) -> np.ndarray:
        return self._read(video_id, "detected")


class SegmentsFile(StageFile):
    """Which frames form each fixed-length segment of every video."""

    STAGE = "segments"

    def write_video(self, video_id: str, segment_index: np.ndarray, n_frames: int) -> None:
        self._write(video_id, {"segment_index": np.asarray(segment_index, np.int32)},
                    attrs={"frames": int(n_frames)})

    def segment_index(self, video_id: str) -> np.ndarray:
        """S x L frame indices (int64)."""
        return self._read(video_id, "segment_index").astype(np.int64)


# --- flow images: (d_x, d_y, |d|) clipped at +-bound, mapped linearly to [0, 255] -----------

def flow_image(flow: np.ndarray, bound: float = 20.0) -> np.ndarray:
    """(..., H, W, 2) flow in pixels -> (..., H, W, 3) uint8 image (d_x, d_y, magnitude):
    components clipped to +-bound, mapped linearly to [0, 255] and rounded."""
    import cv2

    shape = flow.shape[:-1]
    d = np.clip(np.asarray(flow, np.float32), -bound, bound).reshape(-1, shape[-1], 2)
    x, y = cv2.split(d)
    scale = 255.0 / (2.0 * bound)
    channels = [cv2.convertScaleAbs(x, alpha=scale, beta=127.5),
                cv2.convertScaleAbs(y, alpha=scale, beta=127.5),
                cv2.convertScaleAbs(cv2.magnitude(x, y), alpha=255.0 / (bound * np.sqrt(2.0)))]
    return cv2.merge(channels).reshape(shape + (3,))


def dequantise(images: np.ndarray, bound: float) -> np.ndarray:
    """The flow (..., 2 float32, pixels) that a flow image's x and y channels encode."""
    return (images[..., :2].astype(np.float32) - 127.5) * np.float32(2.0 * bound / 255.0)


#: Where zero flow lies in a flow image's x and y channels, as a fraction of 255.
FLOW_ZERO = 127.5 / 255.0


class FlowFile(StageFile):
    """Flow images of every distinct frame pair of a shard's segments."""

    STAGE = "flow"

    def write_video(self, video_id: str, pairs: np.ndarray, flows: np.ndarray,
                    segment_pairs: np.ndarray, store_raw: bool = False) -> None:
        """pairs P x 2 frame indices, flows P x H x W x 2 (pixels), segment_pairs S x (L-1)
        rows of ``pairs``; stores the flow images and, with ``store_raw``, float16 flows."""
        bound = self.bound
        self._write(video_id, {"images": flow_image(flows, bound),
                               "flow": flows.astype(np.float16) if store_raw else None,
                               "pairs": np.asarray(pairs, np.int32),
                               "segment_pairs": np.asarray(segment_pairs, np.int32)},
                    {"images": "gzip", "flow": "gzip"})

    @property
    def bound(self) -> float:
        return float(self.attrs["bound"])

    def images(self, video_id: str, index=None) -> np.ndarray:
        return self._read(video_id, "images", index)

    def pairs(self, video_id: str) -> np.ndarray:
        return self._read(video_id, "pairs").astype(np.int64)

    def segment_pairs(self, video_id: str) -> np.ndarray:
        return self._read(video_id, "segment_pairs").astype(np.int64)

    def flows(self, video_id: str, index=None) -> np.ndarray:
        """Flows in pixels (P x H x W x 2 float32): the stored float16 flow when present,
        else the images' x and y channels dequantised with the bound."""
        if self._has(video_id, "flow"):
            return self._read(video_id, "flow", index).astype(np.float32)
        return dequantise(self.images(video_id, index), self.bound)

    def n_images(self, video_id: str) -> int:
        return self._shape(video_id, "images")[0]


class DynamicFile(StageFile):
    """Rank-pooled images per segment (or per window) of every video of a shard."""

    STAGE = "dynamic"

    def write_video(self, video_id: str, images: np.ndarray, segment_images: np.ndarray,
                    flow_zero: np.ndarray | None = None,
                    images_reverse: np.ndarray | None = None) -> None:
        """images K x H x W x 3 uint8 (uncompressed), segment_images S x 1 (the image each
        segment uses), flow_zero K x 2 (pooled flows: where zero flow lies in the x and y
        channels, as a fraction of 255), images_reverse (rank_svm: the reversed sequence)."""
        self._write(video_id, {"images": images,
                               "segment_images": np.asarray(segment_images, np.int32),
                               "flow_zero": None if flow_zero is None
                               else np.asarray(flow_zero, np.float32),
                               "images_reverse": images_reverse},
                    {"images": None, "images_reverse": None})

    def images(self, video_id: str, index=None) -> np.ndarray:
        return self._read(video_id, "images", index)

    def n_images(self, video_id: str) -> int:
        return self._shape(video_id, "images")[0]

    def segment_images(self, video_id: str) -> np.ndarray:
        return self._read(video_id, "segment_images").astype(np.int64)

    def flow_zero(self, video_id: str, index=None) -> np.ndarray | None:
        return self._read(video_id, "flow_zero", index) if self._has(video_id, "flow_zero") \
            else None


class FeaturesFile(StageFile):
    """Segment features (and, for trained networks, class probabilities) of every video."""

    STAGE = "features"

    def write_video(self, video_id: str, features: np.ndarray,
                    scores: np.ndarray | None = None) -> None:
        """features S x D float32; scores S x K softmax probabilities (networks). gzip, not
        lzf: lzf's output depends on uninitialised memory, and features recomputed with the
        same values must give the same file, so that Snakemake's checksums of small inputs
        spare the evaluations. Raises ValueError on NaN or infinite values (a network whose
        training diverged), which no classifier or normalisation may turn into numbers."""
        arrays = {"features": np.asarray(features, np.float32),
                  "scores": None if scores is None else np.asarray(scores, np.float32)}
        for name, values in arrays.items():
            if values is not None and not np.isfinite(values).all():
                raise ValueError(self._not_finite(video_id, name, values))
        self._write(video_id, arrays, {"features": "gzip", "scores": "gzip"})

    def _not_finite(self, video_id: str, name: str, values: np.ndarray) -> str:
        bad = values.size - int(np.count_nonzero(np.isfinite(values)))
        return (f"{self.path}: {video_id}: {bad} of the {values.size} values of its {name} "
                "are NaN or infinite (a network whose training diverged?)")

    def _verified(self, video_id: str, name: str) -> np.ndarray:
        values = self._read(video_id, name)
        if not np.isfinite(values).all():
            raise StageFileError(f"{self._not_finite(video_id, name, values)}; {RECOVERY}")
        return values

    def features(self, video_id: str) -> np.ndarray:
        return self._verified(video_id, "features")

    def scores(self, video_id: str) -> np.ndarray:
        if not self._has(video_id, "scores"):
            raise StageFileError(f"{self.path}: no class scores (only trained networks "
                                 "write them)")
        return self._verified(video_id, "scores")

    @property
    def has_scores(self) -> bool:
        videos = self.videos()
        return bool(videos) and self._has(videos[0], "scores")


STAGE_FILES = {cls.STAGE: cls for cls in (FacesFile, SegmentsFile, FlowFile, DynamicFile,
                                          FeaturesFile)}


def open_stage_file(path: str | os.PathLike) -> StageFile:
    """Open any stage file by the stage its attrs name."""
    try:
        with h5py.File(path, "r") as f:
            stage = f.attrs.get("stage")
    except OSError as exc:
        raise StageFileError(f"{path}: damaged or unreadable HDF5 file ({exc}); "
                             f"{RECOVERY}") from None
    if stage not in STAGE_FILES:
        raise StageFileError(f"{path}: not a vfer stage file (stage={stage!r})")
    return STAGE_FILES[stage](path)


def check_tree(root: str | os.PathLike) -> list[tuple[Path, str]]:
    """Every stage file under ``root`` that cannot be read back whole: (path, reason)."""
    damaged = []
    for path in sorted(Path(root).rglob("*.h5")):
        try:
            with open_stage_file(path) as f:
                f.check()
        except (StageFileError, OSError, KeyError) as exc:
            damaged.append((path, str(exc)))
    return damaged
