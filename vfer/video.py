"""Frame sources: video files (OpenCV's FFmpeg) and image-sequence folders, as RGB uint8.

Frames are counted as decoded; a container's frame count is kept only for information.
Grayscale input becomes 3 channels. ``resample`` picks frames for a lower target rate.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp"}


class VideoError(Exception):
    """An input that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    kind: str  # "video" or "images"
    fps: float
    declared_frames: int  # what the container claims (image folders: number of files)


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a sequence folder in natural order (frame2 before frame10)."""
    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class FrameSource:
    """Iterate the frames of a video file or image folder; use as a context manager."""

    def __init__(self, path: str | os.PathLike, sequence_fps: float = 30.0):
        self.path = os.fspath(path)
        self._cap = None
        self._files: list[Path] = []
        if not os.path.exists(self.path):
            raise VideoError(f"file not found: {self.path}")
        if os.path.isdir(self.path):
            self._files = image_files(self.path)
            if not self._files:
                raise VideoError(f"no image files in folder: {self.path}")
            self.info = VideoInfo(self.path, "images", float(sequence_fps), len(self._files))
            return
        if os.path.getsize(self.path) == 0:
            raise VideoError(f"empty file: {self.path}")
        cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise VideoError(f"cannot decode (not a video, or an unsupported codec): {self.path}")
        self._cap = cap
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not np.isfinite(fps) or fps <= 0 or fps > 1000:
            raise VideoError(f"no usable frame rate ({fps}): {self.path}")
        self.info = VideoInfo(self.path, "video", fps, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._cap is not None:
            while True:
                ok, frame = self._cap.read()
                if not ok:
                    return
                yield _to_rgb(frame)
        for file in self._files:
            frame = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
            if frame is None:
                raise VideoError(f"cannot read image {file.name} of sequence: {self.path}")
            if frame.dtype != np.uint8:
                frame = cv2.convertScaleAbs(frame, alpha=255.0 / max(1, int(frame.max())))
            yield _to_rgb(frame)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resample(frames: Iterator[np.ndarray], fps: float,
             target_fps: float | None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (decoded index, frame) of the frames kept at ``target_fps``.

    Output frame k is the decoded frame nearest to time k / target_fps. Without a target, or
    with one at or above ``fps``, every frame is kept (never upsampled).
    """
    step = fps / target_fps if target_fps and target_fps < fps else 1.0
    wanted = 0.0
    for i, frame in enumerate(frames):
        if i >= int(np.floor(wanted + 0.5)):
            yield i, frame
            wanted += step


def read_video(path: str | os.PathLike, target_fps: float | None = None,
               sequence_fps: float = 30.0) -> tuple[np.ndarray, VideoInfo]:
    """All kept frames (T x H x W x 3 RGB uint8) and the source info; raises on zero frames."""
    with FrameSource(path, sequence_fps) as src:
        frames = [f for _, f in resample(iter(src), src.info.fps, target_fps)]
    if not frames:
        raise VideoError(f"no decodable frames: {src.info.path}")
    return np.stack(frames), src.info
