"""Optical flow between the frame pairs of segments, and 8-bit flow images (METHODS.md).

Each distinct pair of a video is computed once; a pair of identical frame indices (padding)
has zero flow without computing. A flow image is (d_x, d_y, |d|): each component clipped to
+-bound and mapped linearly to [0, 255]; the magnitude maps [0, bound * sqrt(2)] to [0, 255].
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def farneback(prev: np.ndarray, nxt: np.ndarray, pyr_scale: float = 0.5, levels: int = 3,
              winsize: int = 15, iterations: int = 3, poly_n: int = 5,
              poly_sigma: float = 1.2) -> np.ndarray:
    """Dense Farneback flow (H x W x 2 float32, pixels) from two grayscale uint8 images."""
    return cv2.calcOpticalFlowFarneback(prev, nxt, None, pyr_scale, levels, winsize,
                                        iterations, poly_n, poly_sigma, 0)


def method(name: str, params: dict) -> FlowFn:
    """The flow function for ``name`` with its parameters bound."""
    if name == "farneback":
        return lambda a, b: farneback(a, b, **params)
    raise ValueError(f"unknown flow method {name!r}")


def segment_pairs(segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct consecutive frame pairs of all segments, and each segment's pair indices.

    Returns ``pairs`` (P x 2, sorted) and ``index`` (S x (L - 1)) with
    ``pairs[index[s, t]] == (segments[s, t], segments[s, t + 1])``.
    """
    all_pairs = np.stack([segments[:, :-1], segments[:, 1:]], axis=-1).reshape(-1, 2)
    pairs, inverse = np.unique(all_pairs, axis=0, return_inverse=True)
    return pairs.astype(np.int32), inverse.reshape(segments.shape[0], -1).astype(np.int32)


def to_gray(frames: np.ndarray) -> np.ndarray:
    """RGB uint8 frames (T x H x W x 3) to grayscale (T x H x W)."""
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])


def compute_pairs(gray: np.ndarray, pairs: np.ndarray, fn: FlowFn) -> np.ndarray:
    """Flow of each pair (P x H x W x 2 float32); identical indices give zeros uncomputed."""
    out = np.zeros((len(pairs),) + gray.shape[1:] + (2,), np.float32)
    for k, (a, b) in enumerate(pairs):
        if a != b:
            out[k] = fn(gray[a], gray[b])
    return out


def flow_image(flow: np.ndarray, bound: float = 20.0) -> np.ndarray:
    """(..., 2) flow in pixels -> (..., 3) uint8 image (d_x, d_y, magnitude), bounded."""
    d = np.clip(flow, -bound, bound)
    mag = np.sqrt((d ** 2).sum(-1, keepdims=True))
    xy = (d + bound) * (255.0 / (2.0 * bound))
    m = mag * (255.0 / (bound * np.sqrt(2.0)))
    return np.round(np.concatenate([xy, m], axis=-1)).clip(0, 255).astype(np.uint8)


def process_shard(faces_path: str, segments_path: str, out_path: str, name: str, params: dict,
                  bound: float, provenance: dict) -> None:
    """Flow images of every distinct frame pair of every video in a shard."""
    from vfer.io import create_h5, open_h5, write_array
    from vfer.runtime import progress

    fn = method(name, params)
    with open_h5(faces_path, "faces") as faces, open_h5(segments_path, "segments") as segs, \
            create_h5(out_path, "flow", {"method": name, "params": params, "bound": bound,
                                         **provenance}) as dst:
        for video_id in progress(list(segs), "flow"):
            segments = segs[video_id]["segment_index"][()]
            pairs, index = segment_pairs(segments)
            gray = to_gray(faces[video_id]["frames"][()])
            flows = compute_pairs(gray, pairs, fn)
            g = dst.create_group(video_id)
            write_array(g, "images", flow_image(flows, bound))
            write_array(g, "pairs", pairs)
            write_array(g, "segment_pairs", index)
