"""Face stage: detection (MediaPipe), one face track per video, eye-aligned crops.

Per frame the detector gives a box, a score, the two eye centres and (FaceMesh) 478
landmarks. Eye centres are interpolated over frames without a face and smoothed in time; each
frame is rotated so the eyes are level and cropped around them (METHODS.md: the crop is
``crop_iod`` = (height, width) inter-ocular distances, eyes at ``eye_row`` of the height).
A frame without a face gets the crop of the nearest frame with one and is flagged.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from vfer.io import atomic_path, create_h5, write_array
from vfer.runtime import progress
from vfer.video import VideoError, iter_frames, open_video

log = logging.getLogger(__name__)

N_LANDMARKS = 478
FAILURE_COLUMNS = ("video_id", "path", "stage", "reason")
RIGHT_IRIS, LEFT_IRIS = 468, 473  # subject's right eye appears on the image's left


class FaceError(VideoError):
    """A video in which no usable face was found."""


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # x0, y0, x1, y1 in pixels
    score: float
    eyes: np.ndarray  # 2 x 2: image-left eye, image-right eye (x, y) pixels
    landmarks: np.ndarray | None  # 478 x 3 (x, y pixels; z relative, pixel-scaled) or None


@dataclass
class FaceTrack:
    """Everything the face stage stores for one video."""

    crops: np.ndarray  # T x H x W x 3 uint8
    boxes: np.ndarray  # T x 4 float32 (NaN where no face)
    scores: np.ndarray  # T float32 (0 where no face)
    eyes: np.ndarray  # T x 2 x 2 float32, smoothed eye centres used for alignment
    landmarks: np.ndarray  # T x 478 x 3 float32 (NaN where absent)
    detected: np.ndarray  # T bool
    source: np.ndarray  # T int32: frame whose crop is stored (itself when detected)
    attrs: dict = field(default_factory=dict)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class MediaPipeDetector:
    """BlazeFace boxes and eye keypoints, plus FaceMesh landmarks (tracking mode per video)."""

    def __init__(self, model_selection: int = 0, min_confidence: float = 0.5,
                 landmarks: bool = True):
        import mediapipe as mp

        self._mp = mp
        self.min_confidence = min_confidence
        self.landmarks = landmarks
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=model_selection, min_detection_confidence=min_confidence)
        self._mesh = None
        self._previous: np.ndarray | None = None

    def new_video(self) -> None:
        """Forget the previous video's track (FaceMesh tracks across calls)."""
        if self._mesh is not None:
            self._mesh.close()
        self._mesh = None
        if self.landmarks:
            self._mesh = self._mp.solutions.face_mesh.FaceMesh(
                static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=self.min_confidence, min_tracking_confidence=0.5)
        self._previous = None

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
        self._detector.close()

    def __call__(self, frame: np.ndarray) -> Detection | None:
        h, w = frame.shape[:2]
        found = self._detector.process(frame).detections or []
        candidates = []
        for det in found:
            rel = det.location_data.relative_bounding_box
            box = np.array([rel.xmin * w, rel.ymin * h, (rel.xmin + rel.width) * w,
                            (rel.ymin + rel.height) * h])
            kp = det.location_data.relative_keypoints
            eyes = np.array([[kp[0].x * w, kp[0].y * h], [kp[1].x * w, kp[1].y * h]])
            candidates.append((box, float(det.score[0]), eyes))
        mesh = None
        if self._mesh is not None:
            result = self._mesh.process(frame)
            if result.multi_face_landmarks:
                pts = result.multi_face_landmarks[0].landmark
                mesh = np.array([[p.x * w, p.y * h, p.z * w] for p in pts], np.float32)
        if candidates:
            box, score, eyes = self._choose(candidates)
        elif mesh is not None:  # FaceMesh kept tracking a face BlazeFace missed
            box = np.concatenate([mesh[:, :2].min(0), mesh[:, :2].max(0)]).astype(float)
            score, eyes = 0.0, None
        else:
            return None
        if mesh is not None:
            mesh_eyes = mesh[[RIGHT_IRIS, LEFT_IRIS], :2].astype(float)
            inside = np.all((mesh_eyes >= box[:2]) & (mesh_eyes <= box[2:]))
            if inside:
                eyes = mesh_eyes
            else:  # the mesh follows another face than the track
                mesh = None
        if eyes is None:
            return None
        self._previous = box
        return Detection(box, score, eyes, mesh)

    def _choose(self, candidates):
        """Keep following the previous box; otherwise take the largest face."""
        if self._previous is not None:
            overlaps = [_iou(c[0], self._previous) for c in candidates]
            best = int(np.argmax(overlaps))
            if overlaps[best] > 0.3:
                return candidates[best]
        areas = [(c[0][2] - c[0][0]) * (c[0][3] - c[0][1]) for c in candidates]
        return candidates[int(np.argmax(areas))]


def fill_gaps(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Linearly interpolate rows where ``present`` is False (nearest value beyond the ends)."""
    values = np.asarray(values, np.float64)
    t = np.arange(len(values))
    flat = values.reshape(len(values), -1)
    out = np.empty_like(flat)
    for j in range(flat.shape[1]):
        out[:, j] = np.interp(t, t[present], flat[present, j])
    return out.reshape(values.shape)


def nearest_present(present: np.ndarray) -> np.ndarray:
    """For each frame, the index of the nearest frame where ``present`` is True."""
    idx = np.flatnonzero(present)
    t = np.arange(len(present))
    pos = np.clip(np.searchsorted(idx, t), 1, len(idx) - 1) if len(idx) > 1 else np.zeros_like(t)
    if len(idx) == 1:
        return np.full(len(present), idx[0])
    left, right = idx[pos - 1], idx[pos]
    return np.where(t - left <= right - t, left, right)


def alignment_matrix(eyes: np.ndarray, size: tuple[int, int], crop_iod: tuple[float, float],
                     eye_row: float) -> np.ndarray:
    """2 x 3 affine mapping frame pixels to the aligned crop.

    The eyes end up level, their midpoint at column W/2 and row ``eye_row`` * H; the crop spans
    ``crop_iod`` = (height, width) inter-ocular distances (scaled to ``size`` = (H, W)).
    """
    left, right = eyes[0], eyes[1]
    d = right - left
    iod = float(np.hypot(*d))
    if iod < 1e-3:
        raise ValueError("eye centres coincide")
    cos, sin = d / iod
    rot = np.array([[cos, sin], [-sin, cos]])  # rotates the eye line onto the x axis
    h, w = size
    scale = np.diag([w / (crop_iod[1] * iod), h / (crop_iod[0] * iod)])
    a = scale @ rot
    centre = (left + right) / 2.0
    t = np.array([w / 2.0, eye_row * h]) - a @ centre
    return np.hstack([a, t[:, None]])


def align_crop(frame: np.ndarray, eyes: np.ndarray, size: tuple[int, int],
               crop_iod: tuple[float, float], eye_row: float) -> np.ndarray:
    """Eye-aligned crop of ``frame`` (area-averaged when the face is larger than the crop)."""
    m = alignment_matrix(eyes, size, crop_iod, eye_row)
    shrink = 1.0 / np.sqrt(abs(np.linalg.det(m[:, :2])))
    if shrink <= 1.5:
        return cv2.warpAffine(frame, m, (size[1], size[0]), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    big = (int(round(size[0] * shrink)), int(round(size[1] * shrink)))
    m_big = np.diag([big[1] / size[1], big[0] / size[0]]) @ m
    crop = cv2.warpAffine(frame, m_big, (big[1], big[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def track_video(path: str, detector: MediaPipeDetector, size: tuple[int, int],
                crop_iod: tuple[float, float], eye_row: float, smooth_sigma: float,
                keep_bytes: int = 512 << 20) -> FaceTrack:
    """Decode ``path``, detect one face track, and return aligned crops and per-frame data.

    Frames are kept in memory for the cropping pass up to ``keep_bytes``; longer videos are
    decoded a second time instead.
    """
    cap, info = open_video(path)
    detector.new_video()
    frames, dets, kept, shape = [], [], 0, None
    try:
        for frame in iter_frames(cap):
            shape = frame.shape
            kept += frame.nbytes
            if kept <= keep_bytes:
                frames.append(frame)
            dets.append(detector(frame))
    finally:
        cap.release()
    n = len(dets)
    if n == 0:
        raise VideoError(f"no decodable frames: {path}")
    detected = np.array([d is not None for d in dets])
    if not detected.any():
        raise FaceError(f"no face in {n} decoded frames: {path}")
    boxes = np.full((n, 4), np.nan, np.float32)
    scores = np.zeros(n, np.float32)
    raw_eyes = np.zeros((n, 2, 2))
    landmarks = np.full((n, N_LANDMARKS, 3), np.nan, np.float32)
    for i, d in enumerate(dets):
        if d is not None:
            boxes[i], scores[i], raw_eyes[i] = d.box, d.score, d.eyes
            if d.landmarks is not None:
                landmarks[i] = d.landmarks
    eyes = fill_gaps(raw_eyes, detected)
    if smooth_sigma > 0:
        eyes = gaussian_filter1d(eyes, smooth_sigma, axis=0, mode="nearest")
    source = np.where(detected, np.arange(n), nearest_present(detected)).astype(np.int32)
    crops = np.empty((n, size[0], size[1], 3), np.uint8)
    if len(frames) < n:  # too long to keep: decode again
        cap, _ = open_video(path)
        frames = iter_frames(cap)
    for i, frame in enumerate(frames):
        if detected[i]:
            crops[i] = align_crop(frame, eyes[i], size, crop_iod, eye_row)
    crops[~detected] = crops[source[~detected]]
    attrs = {"path": path, "decoded_frames": n, "declared_frames": info.declared_frames,
             "fps": info.fps, "width": shape[1], "height": shape[0],
             "detected_frames": int(detected.sum())}
    return FaceTrack(crops, boxes, scores, eyes.astype(np.float32), landmarks, detected,
                     source, attrs)


def write_failures(path: str, failures: list[dict]) -> None:
    """Write the failures table (TSV: video_id, path, stage, reason), header only if none."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, FAILURE_COLUMNS, delimiter="\t")
            writer.writeheader()
            writer.writerows(failures)


def process_shard(videos: list[tuple[str, str]], out_path: str, failures_path: str,
                  params: dict, provenance: dict) -> list[dict]:
    """Track faces in each (video_id, path) and write one HDF5 group per video.

    A video that cannot be decoded or has no face becomes a failure row; with
    ``params["on_error"] == "fail"`` it stops the job instead.
    """
    detector = MediaPipeDetector(params["model_selection"], params["min_confidence"],
                                 params["landmarks"])
    size, crop_iod = tuple(params["size"]), tuple(params["crop_iod"])
    failures = []
    try:
        with create_h5(out_path, "faces", {"method": params["detector"], "params": params,
                                           **provenance}) as f:
            for video_id, path in progress(videos, "faces"):
                try:
                    track = track_video(path, detector, size, crop_iod, params["eye_row"],
                                        params["smooth_sigma"])
                except VideoError as exc:
                    if params["on_error"] == "fail":
                        raise
                    log.warning("%s: %s", video_id, exc)
                    failures.append({"video_id": video_id, "path": path, "stage": "faces",
                                     "reason": str(exc)})
                    continue
                g = f.create_group(video_id)
                write_array(g, "frames", track.crops)
                write_array(g, "boxes", track.boxes)
                write_array(g, "scores", track.scores)
                write_array(g, "eyes", track.eyes)
                write_array(g, "landmarks", track.landmarks)
                write_array(g, "detected", track.detected)
                write_array(g, "source_frame", track.source)
                g.attrs.update(track.attrs)
                log.info("%s: %d frames, face in %d", video_id, len(track.crops),
                         track.attrs["detected_frames"])
    finally:
        detector.close()
    write_failures(failures_path, failures)
    return failures
