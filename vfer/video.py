"""Video decoding: frames as RGB uint8 arrays, counted as decoded (container counts lie)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np


class VideoError(Exception):
    """A video that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    width: int
    height: int
    declared_frames: int  # what the container claims; only informative


def open_video(path: str | os.PathLike) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Open a video file with OpenCV's FFmpeg backend, or raise VideoError naming it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoError(f"file not found: {path}")
    if os.path.getsize(path) == 0:
        raise VideoError(f"empty file: {path}")
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise VideoError(f"cannot decode (not a video, or an unsupported codec): {path}")
    info = VideoInfo(path, float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
                     int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
    return cap, info


def iter_frames(cap: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """Yield decoded frames as H x W x 3 RGB uint8 (grayscale input becomes 3 channels)."""
    while True:
        ok, frame = cap.read()
        if not ok:
            return
        if frame.ndim == 2 or frame.shape[2] == 1:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        else:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        yield frame


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, VideoInfo]:
    """All frames of a video (T x H x W x 3 RGB uint8) and its info; raises on zero frames."""
    cap, info = open_video(path)
    try:
        frames = list(iter_frames(cap))
    finally:
        cap.release()
    if not frames:
        raise VideoError(f"no decodable frames: {info.path}")
    return np.stack(frames), info
