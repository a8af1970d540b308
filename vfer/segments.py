"""Segmentation: which frames of a video form each fixed-length segment (docs/methods.md).

A segment is a row of frame indices. ``windows`` (the seeds): videos shorter than ``length``
are padded by repeating their first and last frames ((length - n) / 2 each, the odd one at the
end; ``pad: last`` repeats only the last frame); longer videos give windows of ``length`` frames
every ``stride`` frames, centred so that the frames left over are dropped equally at both ends.
``resample`` (paper 003): one segment per video of ``length`` frames: sampled uniformly from
a longer video; a shorter one keeps all its frames and repeats its last frame.

Segments in which a face was detected in fewer than ``min_face`` of the frames (the faces
stage fills such frames with the nearest detected crop, a still image) are left out; a video
none of whose segments reaches that share keeps the one with the most detected frames.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def segment_indices(n_frames: int, length: int = 16, stride: int = 16, mode: str = "windows",
                    pad: str = "both") -> np.ndarray:
    """Frame indices of each segment, shape (segments, length), int32."""
    if n_frames < 1:
        raise ValueError("a video needs at least one frame")
    if length < 2 or stride < 1:
        raise ValueError("segment length must be >= 2 and stride >= 1")
    if mode == "resample":
        if n_frames < length:
            row = np.concatenate([np.arange(n_frames), np.full(length - n_frames, n_frames - 1)])
        else:
            row = np.round(np.linspace(0, n_frames - 1, length))
        return row[None, :].astype(np.int32)
    if mode != "windows":
        raise ValueError(f"unknown segmentation mode {mode!r}")
    if n_frames < length:
        before = (length - n_frames) // 2 if pad == "both" else 0
        after = length - n_frames - before
        row = np.concatenate([np.zeros(before, int), np.arange(n_frames),
                              np.full(after, n_frames - 1)])
        return row[None, :].astype(np.int32)
    count = 1 + (n_frames - length) // stride
    span = (count - 1) * stride + length
    start = (n_frames - span) // 2
    starts = start + stride * np.arange(count)
    return (starts[:, None] + np.arange(length)[None, :]).astype(np.int32)


def face_share(index: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Per row of ``index`` (segments x L frame indices), the share of its frames with a
    detected face (``detected``: one bool per frame)."""
    return detected[index].mean(1)


def with_faces(index: np.ndarray, detected: np.ndarray, min_face: float) -> np.ndarray:
    """The rows of ``index`` in which at least ``min_face`` of the frames have a detected
    face (face_share); if none has, the first of those with the most."""
    share = face_share(index, detected)
    keep = share >= min_face
    return index[keep] if keep.any() else index[[int(share.argmax())]]


def process_shard(faces_path: str, out_path: str, params: dict, provenance: dict) -> None:
    """Segment every video of a faces shard (reads the frame counts and face detections)."""
    from vfer.store import FacesFile, SegmentsFile

    with FacesFile(faces_path) as src, \
            SegmentsFile.create(out_path, {"method": params["mode"], "params": params,
                                           **provenance}) as dst:
        for video_id in src.videos():
            n = src.n_frames(video_id)
            index = segment_indices(n, params["length"], params["stride"], params["mode"],
                                    params["pad"])
            kept = with_faces(index, src.detected(video_id).astype(bool), params["min_face"])
            if len(kept) < len(index):
                log.info("%s: %d of %d segments left out (a face in fewer than %g of their "
                         "frames)", video_id, len(index) - len(kept), len(index),
                         params["min_face"])
            dst.write_video(video_id, kept, n)
