"""Face stage: one face track per video, eye-aligned (or box) crops, landmarks, missing faces.

Detectors (``detector``):

* ``mediapipe``: BlazeFace boxes and scores plus FaceMesh's 478 landmarks (tracking mode).
  With ``landmarks: true`` a frame counts as a face only where FaceMesh confirms it, which
  rejects BlazeFace's low-score false positives on face-less frames.
* ``haar``: OpenCV's frontal-face cascade; eyes from the eye cascade, else from box geometry.
* ``none``: every frame already is a face crop; it is only resized, or eye-aligned when
  FaceMesh finds landmarks in most frames.

Per video, detections shorter than ``min_track`` consecutive frames are dropped, eye centres
(or boxes) are interpolated over the gaps and smoothed in time, and each frame with a face is
rotated so that the eyes are level and cropped around them (docs/methods.md: ``crop_iod`` =
(height, width) in inter-ocular distances, eyes at ``eye_row`` of the height). A frame without
a face gets the crop of the nearest frame with one and is flagged; a video without any face is
a failure that names the file. Large frames are downscaled for detection only and cropped
from full resolution.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from vfer.io import atomic_path, write_png
from vfer.runtime import progress, quiet_native_logs
from vfer.store import FacesFile
from vfer.video import FrameSource, VideoError, frame_intervals, resample, variable_rate_note

log = logging.getLogger(__name__)

N_LANDMARKS = 478
RIGHT_IRIS, LEFT_IRIS = 468, 473  # the subject's right eye appears on the image's left
FAILURE_COLUMNS = ("video_id", "path", "stage", "reason")


class FaceError(VideoError):
    """A video in which no usable face was found."""


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # x0, y0, x1, y1 in pixels
    score: float
    eyes: np.ndarray | None  # 2 x 2: image-left eye, image-right eye (x, y); None if unknown
    landmarks: np.ndarray | None = None  # 478 x 3 (x, y pixels; z pixel-scaled)

    def scaled(self, factor: float) -> Detection:
        """The detection in a frame ``factor`` times larger."""
        lm = None
        if self.landmarks is not None:
            lm = self.landmarks * np.float32(factor)
        eyes = None if self.eyes is None else self.eyes * factor
        return Detection(self.box * factor, self.score, eyes, lm)


@dataclass
class FaceTrack:
    """Everything the face stage stores for one video."""

    crops: np.ndarray  # T x H x W x 3 uint8
    boxes: np.ndarray  # T x 4 float32 (NaN where no face)
    scores: np.ndarray  # T float32 (0 where no face)
    eyes: np.ndarray  # T x 2 x 2 float32, smoothed eye centres used for alignment (NaN: none)
    landmarks: np.ndarray  # T x 478 x 3 float32 (NaN where absent)
    detected: np.ndarray  # T bool
    source: np.ndarray  # T int32: the stored frame whose crop each frame holds
    frame_index: np.ndarray  # T int32: decoded frame number of each stored frame
    attrs: dict = field(default_factory=dict)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def choose_face(boxes: list[np.ndarray], previous: np.ndarray | None) -> int:
    """Index of the box that continues the previous one (IoU > 0.3), else of the largest."""
    if previous is not None:
        overlaps = [_iou(b, previous) for b in boxes]
        best = int(np.argmax(overlaps))
        if overlaps[best] > 0.3:
            return best
    return int(np.argmax([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]))


class _Timed:
    """Accumulates the seconds spent inside the detector's library calls."""

    def __init__(self):
        self.library_seconds = 0.0

    def _call(self, fn, *args):
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.library_seconds += time.perf_counter() - t


class MediaPipeDetector(_Timed):
    """BlazeFace boxes and eye keypoints, plus FaceMesh landmarks (tracking mode per video)."""

    def __init__(self, model_selection: int = 0, min_confidence: float = 0.5,
                 landmarks: bool = True):
        super().__init__()
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
        found = self._call(self._detector.process, frame).detections or []
        boxes, scores, eyes = [], [], []
        for det in found:
            rel = det.location_data.relative_bounding_box
            boxes.append(np.array([rel.xmin * w, rel.ymin * h, (rel.xmin + rel.width) * w,
                                   (rel.ymin + rel.height) * h]))
            scores.append(float(det.score[0]))
            kp = det.location_data.relative_keypoints
            eyes.append(np.array([[kp[0].x * w, kp[0].y * h], [kp[1].x * w, kp[1].y * h]]))
        if not self.landmarks:
            if not boxes:
                return None
            k = choose_face(boxes, self._previous)
            self._previous = boxes[k]
            return Detection(boxes[k], scores[k], eyes[k])
        result = self._call(self._mesh.process, frame)
        if not result.multi_face_landmarks:
            return None  # FaceMesh does not confirm a face
        mesh = mesh_points(result.multi_face_landmarks[0], w, h)
        mesh_eyes = mesh[[RIGHT_IRIS, LEFT_IRIS], :2].astype(np.float64)
        holding = [k for k, b in enumerate(boxes)
                   if np.all((mesh_eyes >= b[:2]) & (mesh_eyes <= b[2:]))]
        if holding:
            k = holding[choose_face([boxes[i] for i in holding], self._previous)]
            box, score = boxes[k], scores[k]
        else:  # FaceMesh keeps tracking a face that BlazeFace missed
            box = np.concatenate([mesh[:, :2].min(0), mesh[:, :2].max(0)]).astype(np.float64)
            score = 0.0
        self._previous = box
        return Detection(box, score, mesh_eyes, mesh)


#: Byte columns of a NormalizedLandmarkList serialised with x, y, z only in each landmark (as
#: FaceMesh gives them), 17 bytes per landmark: the list's field 1 (length 15), then fields 1,
#: 2 and 3 of the landmark, each a tag and a little-endian float32 (protobuf wire format).
_LANDMARK_COLUMNS, _LANDMARK_TAGS = [0, 1, 2, 7, 12], [0x0A, 15, 0x0D, 0x15, 0x1D]
_LANDMARK_FLOATS = [k + i for k in (3, 8, 13) for i in range(4)]


def mesh_points(landmarks, w: int, h: int) -> np.ndarray:
    """(n, 3) float32 points (x w, y h, z w) of a MediaPipe NormalizedLandmarkList: read from
    its serialised bytes at once when every landmark holds x, y, z only (38 us for FaceMesh's
    478 instead of 217 us field by field, of a frame's ~6.5 ms in the faces stage), else field
    by field; the same values either way."""
    n = len(landmarks.landmark)
    rows = np.frombuffer(landmarks.SerializeToString(), np.uint8)
    if rows.size == 17 * n:
        rows = rows.reshape(n, 17)
        if (rows[:, _LANDMARK_COLUMNS] == _LANDMARK_TAGS).all():
            xyz = np.ascontiguousarray(rows[:, _LANDMARK_FLOATS]).view("<f4")
            return (xyz.astype(np.float64) * (w, h, w)).astype(np.float32)
    return np.array([(p.x * w, p.y * h, p.z * w) for p in landmarks.landmark], np.float32)


class HaarDetector(_Timed):
    """OpenCV Viola-Jones frontal faces; eyes from the eye cascade or from box geometry."""

    def __init__(self, min_size: float = 0.1):
        super().__init__()
        root = cv2.data.haarcascades
        self._face = cv2.CascadeClassifier(root + "haarcascade_frontalface_default.xml")
        self._eye = cv2.CascadeClassifier(root + "haarcascade_eye.xml")
        self.min_size = min_size
        self._previous: np.ndarray | None = None

    def new_video(self) -> None:
        self._previous = None

    def close(self) -> None:
        pass

    def __call__(self, frame: np.ndarray) -> Detection | None:
        gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
        side = max(16, int(self.min_size * min(gray.shape)))
        rects, _, weights = self._call(
            lambda: self._face.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=5,
                                                 minSize=(side, side), outputRejectLevels=True))
        if len(rects) == 0:
            return None
        boxes = [np.array([x, y, x + w, y + h], np.float64) for x, y, w, h in rects]
        k = choose_face(boxes, self._previous)
        self._previous = boxes[k]
        return Detection(boxes[k], float(np.ravel(weights)[k]), self._eyes(gray, boxes[k]))

    def _eyes(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = box.astype(int)
        w, h = x1 - x0, y1 - y0
        roi = gray[y0:y0 + int(0.6 * h), x0:x1]
        found = self._call(lambda: self._eye.detectMultiScale(
            roi, scaleFactor=1.1, minNeighbors=5, minSize=(max(8, w // 8), max(8, w // 8))))
        centres = [(x0 + ex + ew / 2, y0 + ey + eh / 2) for ex, ey, ew, eh in found]
        left = [c for c in centres if c[0] < x0 + w / 2]
        right = [c for c in centres if c[0] >= x0 + w / 2]
        if left and right:
            return np.array([max(left, key=lambda c: c[1]), max(right, key=lambda c: c[1])])
        # Typical eye positions in a cascade box.
        return np.array([[x0 + 0.3 * w, y0 + 0.38 * h], [x0 + 0.7 * w, y0 + 0.38 * h]])


class WholeFrameDetector(_Timed):
    """For inputs that are already face crops: the face is the whole frame.

    With ``landmarks`` FaceMesh looks for eyes so that the crop can be aligned.
    """

    def __init__(self, landmarks: bool = True, min_confidence: float = 0.5):
        super().__init__()
        self._mesh = None
        if landmarks:
            import mediapipe as mp

            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=min_confidence)

    def new_video(self) -> None:
        pass

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()

    def __call__(self, frame: np.ndarray) -> Detection:
        h, w = frame.shape[:2]
        box = np.array([0.0, 0.0, w, h])
        if self._mesh is not None:
            result = self._call(self._mesh.process, frame)
            if result.multi_face_landmarks:
                pts = result.multi_face_landmarks[0].landmark
                mesh = np.array([(p.x * w, p.y * h, p.z * w) for p in pts], np.float32)
                return Detection(box, 1.0, mesh[[RIGHT_IRIS, LEFT_IRIS], :2].astype(float), mesh)
        return Detection(box, 1.0, None)


def make_detector(params: dict):
    """The detector configured by ``faces.detector``."""
    name = params["detector"]
    if name == "mediapipe":
        return MediaPipeDetector(params["model_selection"], params["min_confidence"],
                                 params["landmarks"])
    if name == "haar":
        return HaarDetector()
    if name == "none":
        return WholeFrameDetector(params["landmarks"], params["min_confidence"])
    raise ValueError(f"unknown face detector {name!r}")


def detect_scaled(detector, frame: np.ndarray, max_side: int) -> Detection | None:
    """Run ``detector`` on a copy of ``frame`` downscaled to at most ``max_side`` pixels."""
    side = max(frame.shape[:2])
    if not max_side or side <= max_side:
        return detector(frame)
    factor = side / max_side
    small = cv2.resize(frame, (round(frame.shape[1] / factor), round(frame.shape[0] / factor)),
                       interpolation=cv2.INTER_AREA)
    det = detector(small)
    return None if det is None else det.scaled(factor)


def drop_short_runs(present: np.ndarray, min_run: int) -> np.ndarray:
    """``present`` without runs of True shorter than ``min_run`` (kept if the video is shorter)."""
    present = np.asarray(present, bool).copy()
    if min_run <= 1 or len(present) < min_run:
        return present
    edges = np.diff(np.concatenate([[0], present.astype(np.int8), [0]]))
    for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        if stop - start < min_run:
            present[start:stop] = False
    return present


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
    if len(idx) == 1:
        return np.full(len(present), idx[0])
    t = np.arange(len(present))
    pos = np.clip(np.searchsorted(idx, t), 1, len(idx) - 1)
    left, right = idx[pos - 1], idx[pos]
    return np.where(t - left <= right - t, left, right)


FITS = ("stretch", "keep", "pad")


def _fit_scales(region_w: float, region_h: float, size: tuple[int, int],
                fit: str) -> tuple[float, float]:
    """x and y scales that map a region of region_w x region_h pixels onto a crop of ``size``:
    ``stretch`` fills the crop (each axis on its own); ``keep`` and ``pad`` use one scale, so
    that the whole region fits and keeps its aspect."""
    h, w = size
    if fit == "stretch":
        return w / region_w, h / region_h
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; choose from {list(FITS)}")
    s = min(w / region_w, h / region_h)
    return s, s


def alignment_matrix(eyes: np.ndarray, size: tuple[int, int], crop_iod: tuple[float, float],
                     eye_row: float, fit: str = "stretch") -> np.ndarray:
    """2 x 3 affine mapping frame pixels to the aligned crop.

    The eyes end up level, their midpoint at column W/2 and row ``eye_row`` * H; the region of
    ``crop_iod`` = (height, width) inter-ocular distances is fitted to ``size`` = (H, W)
    (``fit``: stretched to fill it, or scaled alike on both axes).
    """
    left, right = eyes[0], eyes[1]
    d = right - left
    iod = float(np.hypot(*d))
    if iod < 1e-3:
        raise ValueError("eye centres coincide")
    cos, sin = d / iod
    rot = np.array([[cos, sin], [-sin, cos]])  # rotates the eye line onto the x axis
    h, w = size
    sx, sy = _fit_scales(crop_iod[1] * iod, crop_iod[0] * iod, size, fit)
    a = np.diag([sx, sy]) @ rot
    t = np.array([w / 2.0, eye_row * h]) - a @ ((left + right) / 2.0)
    return np.hstack([a, t[:, None]])


def box_matrix(box: np.ndarray, size: tuple[int, int], margin: float,
               fit: str = "keep") -> np.ndarray:
    """2 x 3 affine mapping the box (grown by ``margin`` per side) onto a crop of ``size`` =
    (H, W), centred, without rotation (``fit``: stretched to fill it, or scaled alike on both
    axes so that the crop shows more of the frame around the box)."""
    h, w = size
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    bw, bh = (box[2] - box[0]) * (1 + 2 * margin), (box[3] - box[1]) * (1 + 2 * margin)
    sx, sy = _fit_scales(bw, bh, size, fit)
    return np.array([[sx, 0.0, w / 2.0 - sx * cx], [0.0, sy, h / 2.0 - sy * cy]])


def pad_mask(size: tuple[int, int], region_hw: tuple[float, float], centre: tuple[float, float]
             ) -> np.ndarray:
    """Crop pixels outside a region of ``region_hw`` (pixels) around ``centre`` (row, col):
    what ``fit: pad`` sets to zero."""
    rows = np.arange(size[0]) + 0.5
    cols = np.arange(size[1]) + 0.5
    inside_r = np.abs(rows - centre[0]) <= region_hw[0] / 2 + 1e-6
    inside_c = np.abs(cols - centre[1]) <= region_hw[1] / 2 + 1e-6
    return ~(inside_r[:, None] & inside_c[None, :])


def warp_crop(frame: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Apply a frame -> crop affine, area-averaging when the face is larger than the crop."""
    shrink = 1.0 / np.sqrt(abs(np.linalg.det(m[:, :2])))
    if shrink <= 1.5:
        return cv2.warpAffine(frame, m, (size[1], size[0]), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    big = (int(round(size[0] * shrink)), int(round(size[1] * shrink)))
    m_big = np.diag([big[1] / size[1], big[0] / size[0]]) @ m
    crop = cv2.warpAffine(frame, m_big, (big[1], big[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The whole frame resized to ``size`` = (H, W) (area-averaged when shrinking)."""
    shrinking = frame.shape[0] > size[0] or frame.shape[1] > size[1]
    return cv2.resize(frame, (size[1], size[0]),
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def align_crop(frame: np.ndarray, eyes: np.ndarray, size: tuple[int, int],
               crop_iod: tuple[float, float], eye_row: float) -> np.ndarray:
    """Eye-aligned crop of ``frame`` (stretched to ``size``)."""
    return warp_crop(frame, alignment_matrix(eyes, size, crop_iod, eye_row), size)


def _smooth(values: np.ndarray, present: np.ndarray, sigma: float) -> np.ndarray:
    out = fill_gaps(values, present)
    return gaussian_filter1d(out, sigma, axis=0, mode="nearest") if sigma > 0 else out


def track_video(path: str, detector, params: dict, keep_bytes: int = 512 << 20) -> FaceTrack:
    """Decode ``path``, follow one face, and return crops and per-frame data.

    Frames are kept in memory for the cropping pass up to ``keep_bytes``; longer videos are
    decoded a second time instead.
    """
    size, crop_iod = tuple(params["size"]), tuple(params["crop_iod"])
    target_fps = params.get("target_fps")
    detector.new_video()
    frames, dets, index, kept, shape, decoded = [], [], [], 0, None, 0

    def counted(source):
        nonlocal decoded
        for frame in source:
            decoded += 1
            yield frame

    with FrameSource(path, params["sequence_fps"]) as src:
        info = src.info
        for i, frame in resample(counted(src), info.fps, target_fps):
            shape = frame.shape
            kept += frame.nbytes
            if kept <= keep_bytes:
                frames.append(frame)
            dets.append(detect_scaled(detector, frame, params["detect_max_side"]))
            index.append(i)
        intervals = frame_intervals(src.times_ms)
    n = len(dets)
    raw = np.array([d is not None for d in dets])
    detected = drop_short_runs(raw, params["min_track"])
    if not detected.any():
        raise FaceError(f"no face in {decoded} decoded frames: {path}")

    boxes = np.full((n, 4), np.nan, np.float32)
    scores = np.zeros(n, np.float32)
    eyes = np.full((n, 2, 2), np.nan)
    landmarks = np.full((n, N_LANDMARKS, 3), np.nan, np.float32)
    for i in np.flatnonzero(detected):
        d = dets[i]
        boxes[i], scores[i] = d.box, d.score
        if d.eyes is not None:
            eyes[i] = d.eyes
        if d.landmarks is not None:
            landmarks[i] = d.landmarks
    with_eyes = detected & np.isfinite(eyes[:, 0, 0])
    mode = params["align"]
    if mode == "eyes" and params["detector"] == "none" and with_eyes.mean() < 0.5:
        mode = "resize"  # pre-cropped faces without enough landmarks: resize only
    fit, mask = params["fit"], None
    if mode == "eyes":
        eyes = _smooth(eyes, with_eyes, params["smooth_sigma"])
        matrices = [alignment_matrix(e, size, crop_iod, params["eye_row"], fit) for e in eyes]
        if fit == "pad":  # the region, in crop pixels, is the same in every frame
            k = min(size[1] / crop_iod[1], size[0] / crop_iod[0])
            region = (crop_iod[0] * k, crop_iod[1] * k)
            row = params["eye_row"]
            mask = pad_mask(size, region, (row * size[0] + (0.5 - row) * region[0],
                                           size[1] / 2))
    elif mode == "box":
        geometry = _smooth(boxes, detected, params["smooth_sigma"])
        matrices = [box_matrix(b, size, params["margin"], fit) for b in geometry]
        if fit == "pad":
            masks = []
            for b, m in zip(geometry, matrices):
                grow = 1 + 2 * params["margin"]
                masks.append(pad_mask(size, ((b[3] - b[1]) * grow * m[1, 1],
                                             (b[2] - b[0]) * grow * m[0, 0]),
                                      (size[0] / 2, size[1] / 2)))
            mask = np.stack(masks)
    else:
        matrices = None  # whole frames, resized

    source = np.where(detected, np.arange(n), nearest_present(detected)).astype(np.int32)
    crops = np.empty((n, size[0], size[1], 3), np.uint8)
    if len(frames) < n:  # too long to keep: decode again
        with FrameSource(path, params["sequence_fps"]) as src:
            frames = (f for _, f in resample(iter(src), info.fps, target_fps))
            _fill_crops(crops, frames, detected, matrices)
    else:
        _fill_crops(crops, frames, detected, matrices)
    if mask is not None:  # fit: pad: what lies outside the region is zero
        crops[np.broadcast_to(mask, (n,) + size) if mask.ndim == 2 else mask] = 0
    crops[~detected] = crops[source[~detected]]
    out_fps = target_fps if target_fps and target_fps < info.fps else info.fps
    attrs = {"path": path, "source": info.kind, "decoded_frames": decoded,
             "declared_frames": info.declared_frames, "fps": info.fps, "stored_fps": out_fps,
             "width": shape[1], "height": shape[0], "detected_frames": int(detected.sum()),
             "rejected_detections": int((raw & ~detected).sum()), "align": mode,
             "frame_intervals_ms": intervals}
    return FaceTrack(crops, boxes, scores, eyes.astype(np.float32), landmarks, detected, source,
                     np.asarray(index, np.int32), attrs)


def _fill_crops(crops: np.ndarray, frames, detected: np.ndarray, matrices) -> None:
    """Crop every detected frame with its matrix, or resize it whole when ``matrices`` is None."""
    size = crops.shape[1:3]
    for i, frame in enumerate(frames):
        if detected[i]:
            crops[i] = resize_frame(frame, size) if matrices is None \
                else warp_crop(frame, matrices[i], size)


def write_failures(path: str, failures: list[dict]) -> None:
    """Write the failures table (TSV: video_id, path, stage, reason), header only if none."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, FAILURE_COLUMNS, delimiter="\t")
            writer.writeheader()
            writer.writerows(failures)


def contact_sheet(rows: list[tuple], tile: int = 64, per_row: int = 8) -> np.ndarray:
    """An RGB image with one row per video: ``per_row`` crops spread over the video, frames
    without a face crossed out in red; a failed video shows its reason instead.

    ``rows`` holds (video_id, crops, detected) or (video_id, reason).
    """
    label_h, width = 16, per_row * tile
    sheet = np.full((len(rows) * (tile + label_h), width, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for r, row in enumerate(rows):
        y = r * (tile + label_h)
        cv2.putText(sheet, row[0], (2, y + 12), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        if len(row) == 2:
            cv2.putText(sheet, row[1][:120], (2, y + label_h + tile // 2), font, 0.35,
                        (200, 0, 0), 1, cv2.LINE_AA)
            continue
        crops, detected = row[1], row[2]
        picks = np.unique(np.linspace(0, len(crops) - 1, per_row).round().astype(int))
        for c, i in enumerate(picks):
            h, w = crops[i].shape[:2]
            s = tile / max(h, w)
            im = cv2.resize(crops[i], (max(1, round(w * s)), max(1, round(h * s))),
                            interpolation=cv2.INTER_AREA)
            x0, y0 = c * tile, y + label_h
            sheet[y0:y0 + im.shape[0], x0:x0 + im.shape[1]] = im
            if not detected[i]:
                cv2.rectangle(sheet, (x0, y0), (x0 + tile - 1, y0 + tile - 1), (220, 0, 0), 2)
                cv2.line(sheet, (x0, y0), (x0 + tile - 1, y0 + tile - 1), (220, 0, 0), 1)
                cv2.line(sheet, (x0 + tile - 1, y0), (x0, y0 + tile - 1), (220, 0, 0), 1)
    return sheet


def process_shard(videos: list[tuple[str, str]], out_path: str, failures_path: str,
                  sheet_path: str, params: dict, provenance: dict) -> list[dict]:
    """Track faces in each (video_id, path); write one HDF5 group per video, the failures
    table and the contact sheet.

    A video that cannot be decoded or has no face becomes a failure row; with
    ``params["on_error"] == "fail"`` it stops the job instead. MediaPipe's and TensorFlow
    Lite's native INFO and WARNING lines (several per video) are left out of the log.
    """
    with quiet_native_logs():
        return _process_shard(videos, out_path, failures_path, sheet_path, params, provenance)


def _process_shard(videos: list[tuple[str, str]], out_path: str, failures_path: str,
                   sheet_path: str, params: dict, provenance: dict) -> list[dict]:
    started = time.perf_counter()
    detector = make_detector(params)
    failures, sheet_rows, frames = [], [], 0
    try:
        with FacesFile.create(out_path, {"method": params["detector"], "params": params,
                                         **provenance}) as f:
            for video_id, path in progress(videos, "faces"):
                try:
                    track = track_video(path, detector, params)
                except VideoError as exc:
                    if params["on_error"] == "fail":
                        raise
                    log.warning("%s: %s", video_id, exc)
                    failures.append({"video_id": video_id, "path": path, "stage": "faces",
                                     "reason": str(exc)})
                    sheet_rows.append((video_id, str(exc)))
                    continue
                f.write_video(video_id, track.crops, track.boxes, track.scores, track.eyes,
                              track.landmarks, track.detected, track.source, track.frame_index,
                              track.attrs)
                frames += len(track.crops)
                if note := variable_rate_note(track.attrs["frame_intervals_ms"]):
                    log.warning("%s: %s: %s", video_id, note, path)
                picks = np.unique(np.linspace(0, len(track.crops) - 1, 8).round().astype(int))
                sheet_rows.append((video_id, track.crops[picks], track.detected[picks]))
                log.info("%s: %d frames, face in %d", video_id, len(track.crops),
                         track.attrs["detected_frames"])
            elapsed = time.perf_counter() - started
            f.set_attrs({"frames": frames})
            log.info("%d frames in %.1f s (%.1f frames/s); detector calls %.1f s (%.0f%%)",
                     frames, elapsed, frames / max(elapsed, 1e-9), detector.library_seconds,
                     100 * detector.library_seconds / max(elapsed, 1e-9))
    finally:
        detector.close()
    write_failures(failures_path, failures)
    write_png(sheet_path, contact_sheet(sheet_rows))
    return failures
