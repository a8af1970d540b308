"""Frame sources: video files (OpenCV's FFmpeg) and image-sequence folders, as RGB uint8.

Frames are counted as decoded; a container's frame count is kept only for information.
Grayscale input becomes 3 channels. ``resample`` picks frames for a lower target rate. A frame
size that changes within a video or a sequence is an error (``FrameSizeError``). Frames are
taken as equally spaced in time; the decoded frames' timestamps tell a video whose frame rate
varies (``frame_intervals``, ``variable_rate_note``).
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
#: A frozen band of rows (``FrozenRows``) counts as a size change once it lasts this long.
FROZEN_SECONDS, FROZEN_MIN_FRAMES = 1.0, 10
#: A video whose frame intervals spread (longest - shortest) by more than this share of their
#: median has a variable frame rate (integer-millisecond timestamps at 29.97 fps spread 3%).
VARIABLE_RATE_SPREAD = 0.1


class VideoError(Exception):
    """An input that cannot be used; the message names the file and the reason."""


class FrameSizeError(VideoError):
    """The frame size changes within a video or an image sequence."""


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


def _depth_scale(first: np.ndarray) -> float:
    """The factor that maps the images of a sequence to 0..255, one for all its frames (a
    scale per frame would make flicker that the flow reads as motion): integer images by the
    bit depth their first frame uses (12-bit values in 16-bit files: 4095 -> 255), others by
    the first frame's maximum."""
    if first.dtype == np.uint8:
        return 1.0
    top = float(first.max())
    if np.issubdtype(first.dtype, np.integer):
        return 255.0 / (2 ** max(8, int(top).bit_length()) - 1)
    return 255.0 / top if top > 1 else 255.0


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
        self.times_ms: list[float] = []  # of the decoded frames of a video file
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
            raise VideoError(self.undecodable())
        self._cap = cap
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not np.isfinite(fps) or fps <= 0 or fps > 1000:
            raise VideoError(f"no usable frame rate ({fps}): {self.path}")
        self.info = VideoInfo(self.path, "video", fps, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))

    def undecodable(self) -> str:
        """The reason for a video file that FFmpeg cannot open, or that yields no frame (a
        damaged header may still be probed as a container, and then decodes nothing)."""
        return f"cannot decode (not a video, or an unsupported codec): {self.path}"

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._cap is not None:
            frozen = FrozenRows(self.path, self.info.fps)
            while True:
                ok, frame = self._cap.read()
                if not ok:
                    if frozen.index < 0:
                        raise VideoError(self.undecodable())
                    return
                frozen.check(frame)
                self.times_ms.append(self._cap.get(cv2.CAP_PROP_POS_MSEC))
                yield _to_rgb(frame)
        first, scale = None, None
        for i, file in enumerate(self._files):
            frame = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
            if frame is None:
                raise VideoError(f"cannot read image {file.name} of sequence: {self.path}")
            if first is None:
                first, scale = frame.shape, _depth_scale(frame)
            elif frame.shape[:2] != first[:2]:
                raise FrameSizeError(f"frame size changes from {_size(first)} to "
                                     f"{_size(frame.shape)} at frame {i} ({file.name}): "
                                     f"{self.path}")
            if frame.dtype != np.uint8:
                frame = cv2.convertScaleAbs(frame, alpha=scale)
            yield _to_rgb(frame)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def frame_intervals(times_ms: list[float]) -> list[float] | None:
    """[shortest, median, longest] interval (ms) between consecutive decoded frames, from their
    timestamps; None where there are none that increase (image sequences, raw streams)."""
    gaps = np.diff(np.asarray(times_ms, float))
    if not len(gaps) or not np.isfinite(gaps).all() or (gaps <= 0).any():
        return None
    return [float(gaps.min()), float(np.median(gaps)), float(gaps.max())]


def variable_rate_note(intervals: list[float] | None) -> str:
    """Why the frames of a video with ``intervals`` (frame_intervals) are not equally spaced in
    time, or "" for a constant rate or unknown timestamps."""
    if intervals is None or intervals[2] - intervals[0] <= VARIABLE_RATE_SPREAD * intervals[1]:
        return ""
    return (f"variable frame rate (frames {intervals[0]:.1f}-{intervals[2]:.1f} ms apart): "
            "frames are taken as equally spaced, so segments span unequal times and a flow "
            "grows with its interval; re-encode at a constant rate (ffmpeg -fps_mode cfr -r N)")


def _size(shape: tuple[int, ...]) -> str:
    """'WxH' of an image shape."""
    return f"{shape[1]}x{shape[0]}"


def _same_bottom_rows(frame: np.ndarray, previous: np.ndarray) -> int:
    """How many bottom rows of two frames of one shape are byte-identical."""
    rows = [np.ascontiguousarray(f).reshape(len(f), -1) for f in (frame, previous)]
    as_bytes = [r.view(np.dtype((np.void, r.shape[1]))).ravel() for r in rows]
    changed = np.flatnonzero(as_bytes[0] != as_bytes[1])
    return len(frame) - 1 - int(changed[-1]) if changed.size else len(frame)


class FrozenRows:
    """Detects, in the frames OpenCV decodes from a video file, a change of the frame height.

    OpenCV's FFmpeg reader converts every frame into a buffer of the first frame's size and
    goes on after the size changes: it fills only the top rows of a lower frame and none of a
    higher one. From that frame on, a bottom band of rows (or the whole frame) repeats the last
    good frame byte for byte, while the rows above it, if any, change in every frame. A
    static video repeats its frames from the start, not right after they changed, and the band
    of unchanged rows of a real video moves with what moves above it: neither keeps a band of
    one exact height, right after it changed, for ``FROZEN_SECONDS``.
    """

    def __init__(self, path: str, fps: float):
        self.path = path
        self.min_frames = max(FROZEN_MIN_FRAMES, round(FROZEN_SECONDS * fps))
        self.previous: np.ndarray | None = None
        self.index = -1
        self.band = self.before = self.start = self.run = 0
        self.after_change = False

    def check(self, frame: np.ndarray) -> None:
        """Take the next decoded frame; raise FrameSizeError once a frozen band lasts."""
        self.index += 1
        if self.previous is not None:
            band = _same_bottom_rows(frame, self.previous)
            if band and band == self.band:
                self.run += 1
            else:
                self.band, self.start, self.run = band, self.index, 1
                self.after_change = self.index >= 2 and self.before < band
            if self.band and self.after_change and self.run >= self.min_frames:
                raise FrameSizeError(self.message(frame.shape))
            self.before = band
        self.previous = frame

    def message(self, shape: tuple[int, ...]) -> str:
        """The reason for a frozen band found in frames of ``shape``."""
        h, start = shape[0], self.start
        frames = f"frames {start}-{self.index}"
        if self.band == h:
            return (f"frame size changes from {_size(shape)} to a larger size at frame {start} "
                    f"(OpenCV keeps the first size and stops decoding: {frames} repeat frame "
                    f"{start - 1} byte for byte), or the video freezes; re-encode it at one "
                    f"frame size: {self.path}")
        top = h - self.band
        return (f"frame size changes from {_size(shape)} to {top} rows at frame {start} (OpenCV "
                f"keeps the first size and fills only the top {top} rows: rows {top}-{h - 1} of "
                f"{frames} repeat frame {start - 1} byte for byte); re-encode it at one frame "
                f"size: {self.path}")


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
    """All kept frames (T x H x W x 3 RGB uint8) and the source info; a source that yields no
    frame raises VideoError."""
    with FrameSource(path, sequence_fps) as src:
        frames = [f for _, f in resample(iter(src), src.info.fps, target_fps)]
    return np.stack(frames), src.info
