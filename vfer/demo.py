"""Demo dataset: a real face photo animated with the facial action units of six expressions.

The photo is ``skimage.data.astronaut()``. Its 478 MediaPipe FaceMesh landmarks drive a
piecewise-affine warp: each frame moves the landmarks by (subject geometry + expression
intensity x action-unit displacements), composes a rigid head motion, and maps the photo through
the Delaunay triangulation of the landmarks. The photo's open smile is closed first, so that
every clip starts neutral; an opening mouth gets a drawn interior (dark cavity, upper teeth).
Subjects differ in face geometry, skin tone, hair colour, background, lighting, head motion and
sensor noise. Everything is drawn from ``numpy.random.default_rng([seed, subject, clip])``.
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import Delaunay

from vfer import BASIC_CLASSES

FRAME_SIZE = (320, 240)  # width, height
FPS = 25.0

# MediaPipe FaceMesh topology (478 points with refine_landmarks=True).
LIPS_UPPER_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIPS_LOWER_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
LIPS_UPPER_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LIPS_LOWER_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
LIP_CORNERS = [61, 291, 78, 308]
EYE_UPPER = [246, 161, 160, 159, 158, 157, 173, 466, 388, 387, 386, 385, 384, 398]
EYE_LOWER = [7, 163, 144, 145, 153, 154, 155, 249, 390, 373, 374, 380, 381, 382]
EYE_CORNERS = [33, 133, 263, 362]
IRIS = list(range(468, 478))
BROWS = [46, 52, 53, 55, 63, 65, 66, 70, 105, 107, 276, 282, 283, 285, 293, 295, 296, 300, 334, 336]
NOSE_ALAE = [48, 64, 98, 129, 278, 294, 327, 358]
CHIN = [152, 148, 377, 175, 199, 200, 18, 176, 400]
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
             400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54,
             103, 67, 109]

# Expressions as weighted facial action units (EMFACS prototypes).
EXPRESSIONS: dict[str, dict[str, float]] = {
    "anger": {"AU4": 1.0, "AU5": 0.4, "AU7": 1.0, "AU23": 1.0},
    "disgust": {"AU4": 0.4, "AU9": 1.0, "AU10": 1.0, "AU15": 0.6},
    "fear": {"AU1": 1.0, "AU2": 0.5, "AU4": 0.5, "AU5": 1.0, "AU20": 1.0, "AU26": 0.45},
    "happiness": {"AU6": 1.0, "AU12": 1.0, "AU26": 0.25},
    "sadness": {"AU1": 1.0, "AU4": 0.6, "AU15": 1.0, "AU17": 0.8},
    "surprise": {"AU1": 1.0, "AU2": 1.0, "AU5": 0.8, "AU26": 1.0},
}

SKIN_TONES = np.array([
    [1.00, 1.00, 1.00], [0.92, 0.80, 0.70], [0.78, 0.60, 0.48], [0.62, 0.45, 0.35],
    [0.50, 0.36, 0.28], [1.03, 0.95, 0.92], [0.86, 0.70, 0.58], [0.70, 0.53, 0.42],
    [0.56, 0.41, 0.33], [0.96, 0.87, 0.80],
])
HAIR_COLOURS = np.array([
    [1.00, 1.00, 1.00], [0.40, 0.33, 0.30], [0.22, 0.20, 0.19], [1.15, 0.88, 0.60],
    [0.62, 0.46, 0.36], [0.85, 0.85, 0.85], [0.30, 0.24, 0.22], [1.10, 1.00, 0.80],
])


@dataclass(frozen=True)
class Photo:
    """The source photo with its landmarks and the geometry derived from them."""

    image: np.ndarray  # H x W x 3 float32 RGB in [0, 1]
    landmarks: np.ndarray  # 478 x 2 photo pixels
    origin: np.ndarray  # midpoint between the eyes
    axes: np.ndarray  # 2 x 2, rows: face x axis, face y axis (unit vectors)
    iod: float  # inter-ocular distance in pixels
    head_alpha: np.ndarray  # H x W float32, head + neck + shoulders
    skin_alpha: np.ndarray  # H x W float32
    anchors: np.ndarray  # rigid points around the face, photo pixels
    triangles: np.ndarray  # Delaunay triangles over landmarks + anchors


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def detect_mesh(image_rgb: np.ndarray) -> np.ndarray:
    """478 FaceMesh landmarks (pixels) of the single face in an RGB uint8 image (MediaPipe's
    native INFO and WARNING lines left out of the console)."""
    import mediapipe as mp

    from vfer.runtime import quiet_native_logs

    with quiet_native_logs(), mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True) as mesh:
        result = mesh.process(image_rgb)
    if not result.multi_face_landmarks:
        raise RuntimeError("FaceMesh found no face in the demo photo")
    h, w = image_rgb.shape[:2]
    pts = result.multi_face_landmarks[0].landmark
    return np.array([[p.x * w, p.y * h] for p in pts], dtype=np.float64)


@functools.lru_cache(maxsize=1)
def load_photo() -> Photo:
    """Load the astronaut photo, find its landmarks and build masks and the triangulation."""
    from skimage import data

    rgb = data.astronaut()
    # Rounded to 1/8 px so that tiny float differences between machines do not propagate.
    lm = np.round(detect_mesh(rgb) * 8.0) / 8.0
    right_eye, left_eye = lm[468], lm[473]  # iris centres (image left, image right)
    origin = (right_eye + left_eye) / 2.0
    ex = (left_eye - right_eye) / np.linalg.norm(left_eye - right_eye)
    axes = np.stack([ex, np.array([-ex[1], ex[0]])])
    iod = float(np.linalg.norm(left_eye - right_eye))

    h, w = rgb.shape[:2]
    face = (lm - origin) @ axes.T / iod
    # Head mask: an ellipse over face and hair, plus neck and shoulders down to the bottom.
    head = np.zeros((h, w), np.float32)
    centre = origin + iod * (np.array([0.0, 0.05]) @ axes)
    cv2.ellipse(head, (int(centre[0]), int(centre[1])), (int(1.3 * iod), int(1.5 * iod)),
                0, 0, 360, 1.0, -1)
    chin = lm[152]
    neck = np.array([[chin[0] - 0.75 * iod, chin[1] - 0.3 * iod],
                     [chin[0] + 0.75 * iod, chin[1] - 0.3 * iod],
                     [chin[0] + 1.4 * iod, chin[1] + 0.9 * iod], [chin[0] + 2.3 * iod, h],
                     [chin[0] - 2.3 * iod, h], [chin[0] - 1.4 * iod, chin[1] + 0.9 * iod]])
    cv2.fillPoly(head, [np.round(neck).astype(np.int32)], 1.0)
    head = cv2.GaussianBlur(head, (0, 0), 2.0)
    skin = np.zeros((h, w), np.float32)
    cv2.fillPoly(skin, [np.round(lm[FACE_OVAL]).astype(np.int32)], 1.0)
    neck_skin = np.array([[chin[0] - 0.55 * iod, chin[1] - 0.6 * iod],
                          [chin[0] + 0.55 * iod, chin[1] - 0.6 * iod],
                          [chin[0] + 0.5 * iod, chin[1] + 0.45 * iod],
                          [chin[0] - 0.5 * iod, chin[1] + 0.45 * iod]])
    cv2.fillPoly(skin, [np.round(neck_skin).astype(np.int32)], 1.0)
    skin = cv2.GaussianBlur(skin, (0, 0), 3.0) * head

    # Rigid anchors: two rings around the face; the warp is piecewise affine inside them.
    ang = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
    rings = []
    for rx, ry in ((1.45, 1.75), (2.4, 2.8)):
        ring = np.stack([rx * np.cos(ang), 0.45 + ry * np.sin(ang)], axis=1)
        rings.append(origin + iod * ring @ axes)
    anchors = np.concatenate(rings)
    del face
    tri = Delaunay(np.concatenate([lm, anchors])).simplices.astype(np.int32)
    return Photo(rgb.astype(np.float32) / 255.0, lm, origin, axes, iod, head, skin,
                 anchors, tri)


def to_face(photo: Photo, pts: np.ndarray) -> np.ndarray:
    """Photo pixels -> face coordinates (origin between the eyes, unit = inter-ocular distance)."""
    return (pts - photo.origin) @ photo.axes.T / photo.iod


def spread(face: np.ndarray, centres: np.ndarray, sigma: float,
           weights: np.ndarray | None = None) -> np.ndarray:
    """Per-landmark weight: the largest Gaussian falloff from any control centre."""
    d2 = ((face[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    g = np.exp(-d2 / (2.0 * sigma * sigma))
    if weights is not None:
        g = g * weights[None, :]
    return g.max(axis=1)


def _mask(n: int, idx) -> np.ndarray:
    m = np.zeros(n, bool)
    m[list(idx)] = True
    return m


def action_unit(name: str, face: np.ndarray) -> np.ndarray:
    """Displacement (478 x 2, face units) of one action unit at full intensity on a neutral face."""
    n = len(face)
    x, y = face[:, 0], face[:, 1]
    side = np.sign(x)
    d = np.zeros_like(face)
    upper_lip = _mask(n, LIPS_UPPER_OUTER + LIPS_UPPER_INNER) & ~_mask(n, LIP_CORNERS)
    lower_lip = _mask(n, LIPS_LOWER_OUTER + LIPS_LOWER_INNER) & ~_mask(n, LIP_CORNERS)
    eyes = _mask(n, EYE_UPPER + EYE_LOWER + EYE_CORNERS + IRIS)
    y_mouth = face[[61, 291], 1].mean()
    brows = np.array(BROWS)
    inner = np.clip(1.0 - (np.abs(x[brows]) - 0.2) / 0.45, 0.0, 1.0)
    outer = np.clip((np.abs(x[brows]) - 0.3) / 0.4, 0.0, 1.0)
    protect_eyes = eyes | (y > 0.0)
    if name == "AU1":  # inner brow raiser
        w = spread(face, face[brows], 0.2, inner)
        d[:, 1] = -0.13 * w * ~protect_eyes
    elif name == "AU2":  # outer brow raiser
        w = spread(face, face[brows], 0.2, outer)
        d[:, 1] = -0.13 * w * ~protect_eyes
    elif name == "AU4":  # brow lowerer: down and together
        w = spread(face, face[brows], 0.18, 0.4 + 0.6 * inner) * ~protect_eyes
        d[:, 0] = -0.06 * side * w
        d[:, 1] = 0.07 * w
    elif name == "AU5":  # upper lid raiser
        w = spread(face, face[EYE_UPPER], 0.08) * ~_mask(n, EYE_LOWER + EYE_CORNERS + IRIS)
        d[:, 1] = -0.055 * w
    elif name == "AU6":  # cheek raiser
        cheeks = np.array([[-0.5, 0.55], [0.5, 0.55]])
        w = spread(face, cheeks, 0.25) * ~_mask(n, EYE_UPPER + BROWS + IRIS) * (y > 0.05)
        w = np.maximum(w, 0.5 * _mask(n, EYE_LOWER))
        d[:, 1] = -0.07 * w
    elif name == "AU7":  # lid tightener
        low = spread(face, face[EYE_LOWER], 0.06) * ~_mask(n, EYE_UPPER + EYE_CORNERS + IRIS)
        up = spread(face, face[EYE_UPPER], 0.05) * ~_mask(n, EYE_LOWER + EYE_CORNERS + IRIS)
        d[:, 1] = -0.04 * low + 0.015 * up
    elif name == "AU9":  # nose wrinkler
        w = spread(face, face[NOSE_ALAE], 0.15) * (y < y_mouth - 0.05) * ~eyes
        d[:, 1] = -0.07 * w
    elif name == "AU10":  # upper lip raiser
        centre = np.clip(1.0 - np.abs(x[LIPS_UPPER_OUTER]) / 0.55, 0.25, 1.0)
        w = spread(face, face[LIPS_UPPER_OUTER], 0.15, centre)
        w = w * ~lower_lip * ((y < y_mouth + 0.02) | upper_lip) * ~eyes
        d[:, 1] = -0.075 * w
    elif name in ("AU12", "AU15", "AU20", "AU23"):  # lip corner movers
        vec = {"AU12": (0.11, -0.10), "AU15": (0.02, 0.085), "AU20": (0.11, 0.02),
               "AU23": (-0.06, 0.0)}[name]
        w = spread(face, face[LIP_CORNERS], 0.2) * ~eyes * ~_mask(n, BROWS)
        d[:, 0] = vec[0] * side * w
        d[:, 1] = vec[1] * w
        if name == "AU23":  # lips pressed thin: outer contours move towards the inner ones
            d[LIPS_UPPER_OUTER] += 0.45 * (face[LIPS_UPPER_INNER] - face[LIPS_UPPER_OUTER])
            d[LIPS_LOWER_OUTER] += 0.45 * (face[LIPS_LOWER_INNER] - face[LIPS_LOWER_OUTER])
    elif name == "AU17":  # chin raiser
        w = spread(face, face[CHIN], 0.3) * (y > y_mouth) * ~upper_lip
        w = w * ~_mask(n, LIPS_LOWER_INNER)
        d[:, 1] = -0.06 * w
    elif name == "AU26":  # jaw drop
        w = _jaw_weight(face, y_mouth, lower_lip)
        d[:, 1] = 0.24 * w
    else:
        raise ValueError(f"unknown action unit {name!r}")
    return d


def _jaw_weight(face: np.ndarray, y_mouth: float, lower_lip: np.ndarray) -> np.ndarray:
    """How much each landmark follows the jaw: 1 on the lower lip, fading up and out, 0 above
    the mouth and on the upper lip."""
    x, y = face[:, 0], face[:, 1]
    w = _smoothstep((y - y_mouth + 0.05) / 0.35) * (1.0 - 0.55 * np.clip(np.abs(x) / 1.1, 0, 1))
    w[y < y_mouth - 0.02] = 0.0
    w[LIPS_UPPER_OUTER + LIPS_UPPER_INNER] = 0.0
    w[LIP_CORNERS] = 0.45
    w[lower_lip] = 1.0
    return w


def expression(name: str, face: np.ndarray) -> np.ndarray:
    """Apex displacement (face units) of one of the six basic expressions."""
    return sum(weight * action_unit(au, face) for au, weight in EXPRESSIONS[name].items())


def neutralise(face: np.ndarray) -> np.ndarray:
    """Displacement that closes the photo's open smile (lower inner lip onto the upper one)."""
    n = len(face)
    lower_lip = _mask(n, LIPS_LOWER_OUTER + LIPS_LOWER_INNER) & ~_mask(n, LIP_CORNERS)
    gap = face[LIPS_UPPER_INNER, 1] - face[LIPS_LOWER_INNER, 1]  # <= 0 while the mouth is open
    d = -0.9 * action_unit("AU12", face)
    d[:, 1] += 0.8 * gap.min() * _jaw_weight(face, face[[61, 291], 1].mean(), lower_lip)
    outer = [i for i in LIPS_LOWER_OUTER if i not in LIP_CORNERS]
    d[outer, 1] = np.interp(face[outer, 0], face[LIPS_LOWER_INNER, 0], gap)
    d[LIPS_LOWER_INNER] = face[LIPS_UPPER_INNER] + d[LIPS_UPPER_INNER] - face[LIPS_LOWER_INNER]
    return d


def identity_geometry(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Displacement (face units) giving a subject its own face shape."""
    n = len(face)
    x, y = face[:, 0], face[:, 1]
    eyes = _mask(n, EYE_UPPER + EYE_LOWER + EYE_CORNERS + IRIS)
    lips = _mask(n, LIPS_UPPER_OUTER + LIPS_LOWER_OUTER + LIPS_UPPER_INNER + LIPS_LOWER_INNER)
    d = np.zeros_like(face)
    width, length = rng.uniform(0.88, 1.12), rng.uniform(0.92, 1.1)
    d[:, 0] += (width - 1.0) * x * np.clip((np.abs(x) - 0.45) / 0.4, 0.0, 1.0)
    d[:, 1] += (length - 1.0) * np.maximum(y, 0.0)
    spacing = rng.uniform(-0.05, 0.05)
    w_eye = spread(face, face[eyes], 0.12)
    d[:, 0] += spacing * np.sign(x) * w_eye
    size = rng.uniform(0.88, 1.15)
    for idx in (EYE_UPPER[:7] + EYE_LOWER[:7] + [33, 133, 468, 469, 470, 471, 472],
                EYE_UPPER[7:] + EYE_LOWER[7:] + [263, 362, 473, 474, 475, 476, 477]):
        centre = face[idx].mean(axis=0)
        d[idx] += (size - 1.0) * (face[idx] - centre)
    mouth = rng.uniform(0.88, 1.12)
    centre_x = face[[61, 291], 0].mean()
    d[:, 0] += (mouth - 1.0) * (x - centre_x) * spread(face, face[lips], 0.1)
    brow = rng.uniform(-0.06, 0.06)
    d[:, 1] += brow * spread(face, face[BROWS], 0.15) * ~eyes * (y < 0.0)
    return d


@dataclass(frozen=True)
class Subject:
    """Everything that makes one synthetic subject look like itself."""

    name: str
    geometry: np.ndarray  # 478 x 2 face-unit displacement of the neutral face
    rgba: np.ndarray  # recoloured photo with head alpha, H x W x 4 float32
    to_frame: np.ndarray  # 3 x 3 similarity photo -> frame
    background: np.ndarray  # frame-sized float32 RGB
    light: np.ndarray  # frame-sized multiplicative illumination
    motion: float  # head motion amplitude (1 = moderate)
    noise: float  # sensor noise sigma in [0, 1] intensity units


def _similarity(scale: float, angle_deg: float, centre_from, centre_to) -> np.ndarray:
    m = np.eye(3)
    m[:2] = cv2.getRotationMatrix2D((float(centre_from[0]), float(centre_from[1])),
                                    angle_deg, scale)
    m[:2, 2] += np.asarray(centre_to, float) - np.asarray(centre_from, float)
    return m


def _background(rng: np.random.Generator) -> np.ndarray:
    w, h = FRAME_SIZE
    c0, c1 = rng.uniform(0.15, 0.85, 3), rng.uniform(0.15, 0.85, 3)
    t = np.linspace(0.0, 1.0, h if rng.random() < 0.5 else w)
    grad = c0[None, :] + (c1 - c0)[None, :] * t[:, None]
    bg = np.broadcast_to(grad[:, None, :] if len(t) == h else grad[None, :, :], (h, w, 3)).copy()
    for _ in range(rng.integers(3, 8)):
        colour = tuple(float(v) for v in rng.uniform(0.05, 0.95, 3))
        cx, cy = int(rng.uniform(0, w)), int(rng.uniform(0, h))
        if rng.random() < 0.5:
            cv2.rectangle(bg, (cx, cy), (cx + int(rng.uniform(20, 120)),
                                         cy + int(rng.uniform(20, 120))), colour, -1)
        else:
            cv2.circle(bg, (cx, cy), int(rng.uniform(10, 60)), colour, -1)
    bg = cv2.GaussianBlur(bg.astype(np.float32), (0, 0), 1.5)
    return bg + rng.normal(0.0, 0.02, bg.shape).astype(np.float32)


def make_subject(seed: int, index: int) -> Subject:
    """Subject ``index`` of the demo population drawn with ``seed``."""
    photo = load_photo()
    rng = np.random.default_rng([seed, index, 0])
    face = to_face(photo, photo.landmarks)
    geometry = neutralise(face)
    geometry = geometry + identity_geometry(face + geometry, rng)

    skin_gain = SKIN_TONES[index % len(SKIN_TONES)] * rng.uniform(0.95, 1.05, 3)
    hair_gain = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]
    h = photo.image.shape[0]
    above_chin = _smoothstep((photo.landmarks[152, 1] + 0.3 * photo.iod
                              - np.arange(h, dtype=np.float32)) / 20.0)[:, None]
    hair = (photo.head_alpha - photo.skin_alpha) * above_chin
    gain = 1.0 + photo.skin_alpha[..., None] * (skin_gain - 1.0) \
        + hair[..., None] * (hair_gain - 1.0)
    rgb = np.clip(photo.image * gain, 0.0, 1.0)
    rgba = np.dstack([rgb, photo.head_alpha]).astype(np.float32)

    w, hh = FRAME_SIZE
    scale = rng.uniform(0.85, 1.05) * 0.95
    centre_to = (w / 2 + rng.uniform(-22, 22), hh * 0.47 + rng.uniform(-10, 10))
    to_frame = _similarity(scale, rng.uniform(-4, 4), photo.origin + photo.iod * np.array([0, 0.6]),
                           centre_to)
    ys, xs = np.mgrid[0:hh, 0:w].astype(np.float32)
    phi = rng.uniform(0, 2 * np.pi)
    proj = ((xs - w / 2) * np.cos(phi) + (ys - hh / 2) * np.sin(phi)) / w
    light = rng.uniform(0.75, 1.15) * (1.0 + rng.uniform(0.0, 0.7) * proj)
    return Subject(f"S{index + 1:02d}", geometry, rgba, to_frame, _background(rng),
                   light.astype(np.float32), rng.uniform(0.4, 1.2), rng.uniform(0.01, 0.025))


def expression_profile(rng: np.random.Generator) -> np.ndarray:
    """Intensity over time: neutral, onset, apex, offset, neutral (values in [0, 1])."""
    parts = [rng.integers(2, 7), rng.integers(6, 13), rng.integers(8, 17), rng.integers(6, 13),
             rng.integers(2, 8)]
    s = np.concatenate([np.zeros(parts[0]), _smoothstep(np.arange(1, parts[1] + 1) / parts[1]),
                        np.ones(parts[2]), _smoothstep(1.0 - np.arange(1, parts[3] + 1) / parts[3]),
                        np.zeros(parts[4])])
    return s


def _piecewise_affine_maps(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray,
                           outside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backward maps (frame -> photo) of the piecewise-affine warp src -> dst; ``outside`` is
    the 3 x 3 frame -> photo transform used beyond the triangulation."""
    w, h = FRAME_SIZE
    d, s = dst[triangles], src[triangles]  # K x 3 x 2
    area = (d[:, 1, 0] - d[:, 0, 0]) * (d[:, 2, 1] - d[:, 0, 1]) \
        - (d[:, 2, 0] - d[:, 0, 0]) * (d[:, 1, 1] - d[:, 0, 1])
    keep = np.abs(area) > 0.05
    d, s = d[keep], s[keep]
    dh = np.concatenate([d, np.ones(d.shape[:2] + (1,))], axis=2)
    affine = np.linalg.solve(dh, s)  # K x 3 x 2: [x y 1] @ A = source
    labels = np.full((h, w), -1, np.int32)
    fixed = np.round(d * 16.0).astype(np.int32)
    for k in range(len(fixed)):
        cv2.fillConvexPoly(labels, fixed[k], k, cv2.LINE_8, 4)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    coords = np.stack([xs, ys, np.ones_like(xs)], axis=-1)
    rigid = coords @ outside[:2].T
    inside = labels >= 0
    warped = np.einsum("ni,nij->nj", coords[inside], affine[labels[inside]])
    rigid[inside] = warped
    return rigid[..., 0].astype(np.float32), rigid[..., 1].astype(np.float32)


def _draw_mouth(frame: np.ndarray, upper: np.ndarray, lower: np.ndarray, teeth_px: float) -> None:
    """Paint the mouth cavity and upper teeth between the inner lip contours (in place)."""
    gap = lower[1:-1, 1] - upper[1:-1, 1]
    if gap.max() < 0.6:
        return
    h, w = frame.shape[:2]
    poly = np.concatenate([upper, lower[::-1]])
    cavity = np.zeros((h, w), np.uint8)
    cv2.fillPoly(cavity, [np.round(poly * 8).astype(np.int32)], 255, cv2.LINE_AA, 3)
    teeth_poly = np.concatenate([upper, (upper + [0.0, teeth_px])[::-1]])
    teeth = np.zeros((h, w), np.uint8)
    cv2.fillPoly(teeth, [np.round(teeth_poly * 8).astype(np.int32)], 255, cv2.LINE_AA, 3)
    a_cav = cavity.astype(np.float32)[..., None] / 255.0
    a_teeth = np.minimum(cavity, teeth).astype(np.float32)[..., None] / 255.0
    frame *= 1.0 - a_cav
    frame += a_cav * np.array([0.28, 0.07, 0.09], np.float32)
    frame *= 1.0 - a_teeth
    frame += a_teeth * np.array([0.86, 0.84, 0.78], np.float32)


def render_clip(subject: Subject, label: str, rng: np.random.Generator,
                profile: np.ndarray | None = None) -> np.ndarray:
    """Frames (T x H x W x 3 uint8 RGB) of one clip of ``subject`` showing ``label``, with the
    expression intensity over time ``profile`` (default: a random neutral, onset, apex,
    offset, neutral profile)."""
    photo = load_photo()
    face = to_face(photo, photo.landmarks) + subject.geometry
    apex = expression(label, face) * rng.uniform(0.75, 1.15)
    if profile is None:
        profile = expression_profile(rng)
    t = np.arange(len(profile)) / FPS
    amp = subject.motion * rng.uniform(0.6, 1.0)
    freqs, phases = rng.uniform(0.15, 0.6, 4), rng.uniform(0, 2 * np.pi, 4)
    rot = 2.5 * amp * np.sin(2 * np.pi * freqs[0] * t + phases[0])
    tx = 4.0 * amp * np.sin(2 * np.pi * freqs[1] * t + phases[1])
    ty = 3.0 * amp * np.sin(2 * np.pi * freqs[2] * t + phases[2])
    zoom = 1.0 + 0.03 * amp * np.sin(2 * np.pi * freqs[3] * t + phases[3])
    centre = (subject.to_frame @ np.append(photo.origin, 1.0))[:2]
    src = np.concatenate([photo.landmarks, photo.anchors])
    frames = np.empty((len(profile),) + subject.background.shape, np.uint8)
    for i, s in enumerate(profile):
        pts = face + s * apex
        lm = photo.origin + photo.iod * pts @ photo.axes
        motion = _similarity(zoom[i], rot[i], centre, centre + [tx[i], ty[i]])
        m = motion @ subject.to_frame
        dst = np.concatenate([lm, photo.anchors]) @ m[:2, :2].T + m[:2, 2]
        map_x, map_y = _piecewise_affine_maps(src, dst, photo.triangles, np.linalg.inv(m))
        layer = cv2.remap(subject.rgba, map_x, map_y, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        alpha = layer[..., 3:]
        frame = layer[..., :3] * alpha + subject.background * (1.0 - alpha)
        teeth = 0.09 * photo.iod * float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
        _draw_mouth(frame, dst[LIPS_UPPER_INNER], dst[LIPS_LOWER_INNER], teeth)
        frame *= subject.light[..., None]
        frame += subject.noise * rng.standard_normal(frame.shape, dtype=np.float32)
        frames[i] = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return frames


#: Codec OpenCV's FFmpeg can write into each container.
FOURCC = {".mp4": "mp4v", ".mov": "mp4v", ".flv": "FLV1", ".mkv": "MJPG", ".avi": "MJPG"}


def write_video(path: Path, frames: np.ndarray, fps: float = FPS) -> None:
    """Write RGB frames (MJPG for .avi), atomically (temporary name, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    h, w = frames.shape[1:3]
    fourcc = cv2.VideoWriter_fourcc(*FOURCC.get(path.suffix.lower(), "MJPG"))
    writer = cv2.VideoWriter(str(tmp), fourcc, fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"cannot open a video writer for {tmp}")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    os.replace(tmp, path)


def _render_subject(job: tuple) -> list[dict]:
    outdir, seed, index, classes, clips = job
    cv2.setNumThreads(1)  # one worker per core; OpenCV's own threads would oversubscribe
    subject = make_subject(seed, index)
    rows = []
    for ci, label in enumerate(classes):
        for k in range(clips):
            rng = np.random.default_rng([seed, index, 1 + ci * clips + k])
            frames = render_clip(subject, label, rng)
            video_id = f"{subject.name}_{label}_{k + 1:02d}"
            rel = Path("videos") / subject.name / f"{video_id}.avi"
            (outdir / rel).parent.mkdir(parents=True, exist_ok=True)
            write_video(outdir / rel, frames)
            rows.append({"video_id": video_id, "path": rel.as_posix(), "label": label,
                         "subject": subject.name})
    return rows


class DemoArgumentError(ValueError):
    """An argument of ``generate`` out of its range; ``name`` is the argument."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


def check_arguments(seed: int, subjects: int, clips: int, classes: tuple[str, ...],
                    processes: int | None) -> None:
    """Raise DemoArgumentError for the first argument of ``generate`` out of its range."""
    for name, value, least in (("seed", seed, 0), ("subjects", subjects, 1), ("clips", clips, 1)):
        if value < least:
            raise DemoArgumentError(name, f"must be at least {least}, got {value}")
    if processes is not None and processes < 1:
        raise DemoArgumentError("processes", f"must be at least 1, got {processes}")
    choices = ", ".join(EXPRESSIONS)
    unknown = [c for c in classes if c not in EXPRESSIONS]
    if unknown:
        raise DemoArgumentError("classes", f"the demo cannot animate {unknown[0]!r}; choose from "
                                           f"{choices}")
    repeated = [c for c in EXPRESSIONS if list(classes).count(c) > 1]
    if repeated:
        raise DemoArgumentError("classes", f"{repeated[0]!r} is given more than once; list each "
                                           "class once")
    if len(classes) < 2:
        raise DemoArgumentError("classes", f"give at least 2 of {choices} (a classifier needs two "
                                           f"classes), got {list(classes)}")


def generate(outdir: str | os.PathLike, seed: int = 0, subjects: int = 10, clips: int = 2,
             classes: tuple[str, ...] = BASIC_CLASSES, processes: int | None = None) -> Path:
    """Write the demo dataset (videos + ``samples.tsv``) to ``outdir``; returns the table path.

    The output depends only on the arguments, not on ``processes``.
    """
    from multiprocessing import get_context

    check_arguments(seed, subjects, clips, classes, processes)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    jobs = [(outdir, seed, i, tuple(classes), clips) for i in range(subjects)]
    processes = max(1, min(processes or os.cpu_count() or 1, subjects))
    if processes == 1:
        per_subject = [_render_subject(j) for j in jobs]
    else:
        with get_context("spawn").Pool(processes) as pool:
            per_subject = pool.map(_render_subject, jobs)
    table = outdir / "samples.tsv"
    tmp = table.with_suffix(".tsv.partial")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["video_id", "path", "label", "subject"], delimiter="\t")
        writer.writeheader()
        for rows in per_subject:
            writer.writerows(rows)
    os.replace(tmp, table)
    return table
