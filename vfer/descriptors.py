"""Streams without a CNN: landmark dynamics and a handcrafted appearance/motion baseline.

* ``landmarks``: FaceMesh landmarks (the 152 points of the lips, eyes, brows, nose and face
  oval) aligned per frame to the video's mean shape by a 3D similarity (Umeyama) fitted on
  stable points (eye corners, nose bridge and tip), in inter-ocular units. Per segment, the
  dynamics: the mean, standard deviation and final value of each point's (x, y) displacement
  from the segment's first frame, and the segment's mean shape minus the video's mean shape;
  and the geometry: each frame's shape normalised by the 2D similarity that puts its eye
  centres (midpoints of the eye corners) at (-0.5, 0) and (0.5, 0), averaged over the segment
  and at its last frame, and both minus the clip's first frame, so that a clip of near-apex
  frames, which barely moves, still carries its expression.
* ``hog``: HOG of the grayscale face (64 x 64, 9 orientations, 8 px cells, 2 x 2 blocks)
  averaged over the segment, plus the motion part ``diff``: HOG of the mean absolute frame
  difference (``hog``) or LBP-TOP histograms of the segment volume (``lbp_top``: uniform LBP,
  P = 8, R = 1, on XY, XT and YT planes in 4 x 4 spatial blocks).
"""

from __future__ import annotations

import cv2
import numpy as np

#: Lips, eyes, brows, nose and face oval of the 478-point FaceMesh topology.
LANDMARKS = np.array([
    0, 1, 2, 4, 5, 6, 7, 10, 13, 14, 17, 19, 21, 33, 37, 39, 40, 45, 46, 48, 52, 53, 54, 55, 58,
    61, 63, 64, 65, 66, 67, 70, 78, 80, 81, 82, 84, 87, 88, 91, 93, 94, 95, 97, 98, 103, 105,
    107, 109, 115, 127, 132, 133, 136, 144, 145, 146, 148, 149, 150, 152, 153, 154, 155, 157,
    158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195, 197, 220, 234,
    246, 249, 251, 263, 267, 269, 270, 275, 276, 278, 282, 283, 284, 285, 288, 291, 293, 294,
    295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 326, 327, 332, 334,
    336, 338, 344, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382, 384, 385,
    386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 440, 454, 466])
#: Points that move little with expression: eye corners, nose bridge and tip.
STABLE = np.array([33, 133, 263, 362, 6, 168, 197, 195, 5, 4, 1])
RIGHT_IRIS, LEFT_IRIS = 468, 473
#: Corners of the right and the left eye.
RIGHT_EYE, LEFT_EYE = np.array([33, 133]), np.array([263, 362])


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama least-squares similarity (scale, rotation, translation) with dst ~ s R src + t."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.ones(len(sig))
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / max((a ** 2).sum() / len(src), 1e-12))
    return scale, rot, mu_d - scale * rot @ mu_s


def normalise_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks (T x 478 x 3) aligned per frame to the video's mean shape (inter-ocular units)."""
    iod = np.linalg.norm(landmarks[:, LEFT_IRIS] - landmarks[:, RIGHT_IRIS], axis=1)
    centre = landmarks[:, [RIGHT_IRIS, LEFT_IRIS]].mean(1, keepdims=True)
    x = (landmarks - centre) / iod[:, None, None]
    reference = x[:, STABLE].mean(0)
    out = np.empty_like(x)
    for t in range(len(x)):
        s, r, tr = similarity(x[t, STABLE], reference)
        out[t] = s * x[t] @ r.T + tr
    return out


def canonical_shape(landmarks: np.ndarray) -> np.ndarray:
    """Each frame's (x, y) landmarks (T x 478 x 3 in) normalised by the 2D similarity that puts
    the eye centres (midpoints of each eye's corners) at (-0.5, 0) and (0.5, 0): the shape
    without the face's position, size and roll (T x 478 x 2)."""
    xy = landmarks[..., :2]
    right, left = xy[:, RIGHT_EYE].mean(1), xy[:, LEFT_EYE].mean(1)  # T x 2
    axis = left - right
    length = np.linalg.norm(axis, axis=1)
    c, s = axis[:, 0] / length, axis[:, 1] / length
    rotation = np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], 1)  # T x 2 x 2
    centred = xy - ((right + left) / 2)[:, None]
    return np.einsum("tij,tpj->tpi", rotation, centred) / length[:, None, None]


def landmark_features(landmarks: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Per-segment landmark dynamics and geometry (S x 8 * 152 * 2 float32), in this order:
    displacement from the segment's first frame (mean, standard deviation, last), mean shape
    minus the video's mean shape, canonical shape (mean, last) and canonical shape minus the
    clip's first frame (mean, last); see the module docstring."""
    landmarks = np.asarray(landmarks, np.float64)
    x = normalise_landmarks(landmarks)[:, LANDMARKS, :2]
    shape = canonical_shape(landmarks)[:, LANDMARKS]
    video_mean = x.mean(0)
    rows = []
    for seg in segments:
        pts, geometry = x[seg], shape[seg]
        disp = pts - pts[0]
        mean, last = geometry.mean(0), geometry[-1]
        rows.append(np.concatenate([
            disp.mean(0).ravel(), disp.std(0).ravel(), disp[-1].ravel(),
            (pts.mean(0) - video_mean).ravel(), mean.ravel(), last.ravel(),
            (mean - shape[0]).ravel(), (last - shape[0]).ravel()]))
    return np.asarray(rows, np.float32)


def _gray64(frames: np.ndarray) -> np.ndarray:
    return np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (64, 64),
                                interpolation=cv2.INTER_AREA) for f in frames]).astype(np.float32)


def hog(image: np.ndarray) -> np.ndarray:
    """HOG of a 64 x 64 grayscale image (1764 values)."""
    from skimage.feature import hog as sk_hog

    return sk_hog(image, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
                  block_norm="L2-Hys", feature_vector=True).astype(np.float32)


def lbp_top(volume: np.ndarray, blocks: int = 4) -> np.ndarray:
    """LBP-TOP of a grayscale volume (T x H x W): uniform LBP histograms (59 bins) of the XY,
    XT and YT planes in ``blocks`` x ``blocks`` spatial blocks (blocks^2 * 3 * 59 values), over
    the centre pixels whose neighbours lie inside the volume in every plane (the border's codes
    would compare with skimage's zero padding, and change with the brightness)."""
    from skimage.feature import local_binary_pattern

    def codes(planes):
        return np.stack([local_binary_pattern(p, 8, 1, "nri_uniform") for p in planes])

    volume = np.clip(np.rint(volume), 0, 255).astype(np.uint8)  # LBP compares integer levels
    t, h, w = volume.shape
    if min(t, h, w) < 3:
        raise ValueError(f"LBP-TOP needs at least 3 frames, rows and columns, got {t} x {h} x {w}")
    inner = (slice(1, -1),) * 3
    xy = codes(volume)[inner]                                        # T-2 x H-2 x W-2
    xt = codes(volume.transpose(1, 0, 2)).transpose(1, 0, 2)[inner]  # rows over time
    yt = codes(volume.transpose(2, 0, 1)).transpose(1, 2, 0)[inner]  # columns over time
    h, w = h - 2, w - 2
    out = []
    for by in range(blocks):
        ys = slice(by * h // blocks, (by + 1) * h // blocks)
        for bx in range(blocks):
            xs = slice(bx * w // blocks, (bx + 1) * w // blocks)
            for plane in (xy, xt, yt):
                hist = np.bincount(plane[:, ys, xs].astype(np.int64).ravel(), minlength=59)[:59]
                out.append(hist / max(hist.sum(), 1))
    return np.concatenate(out).astype(np.float32)


def handcrafted_features(frames: np.ndarray, segments: np.ndarray, diff: str = "hog") -> np.ndarray:
    """Per segment: mean HOG of the faces and a motion descriptor (see the module docstring)."""
    gray = _gray64(frames)
    appearance = {i: hog(gray[i]) for i in np.unique(segments)}
    rows = []
    for seg in segments:
        face = np.mean([appearance[i] for i in seg], axis=0)
        volume = gray[seg]
        if diff == "hog":
            motion = hog(np.abs(np.diff(volume, axis=0)).mean(0))
        elif diff == "lbp_top":
            motion = lbp_top(volume)
        else:
            raise ValueError(f"unknown motion descriptor {diff!r}")
        rows.append(np.concatenate([face, motion]))
    return np.asarray(rows, np.float32)
