"""Dynamic images by approximate rank pooling (Bilen et al.; METHODS.md).

d = sum_t alpha_t x_t with alpha_t = 2(T - t + 1) - (T + 1)(H_T - H_{t-1}), t = 1..T, where
H_t is the t-th harmonic number (H_0 = 0): rank pooling with the time-varying mean built in.
"""

from __future__ import annotations

import numpy as np


def rank_pool_coefficients(T: int) -> np.ndarray:
    """alpha_1..alpha_T of approximate rank pooling (they sum to zero)."""
    t = np.arange(1, T + 1, dtype=np.float64)
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / t)])  # H_0 .. H_T
    return 2.0 * (T - t + 1) - (T + 1) * (harmonic[T] - harmonic[:-1])


def dynamic_image(frames: np.ndarray) -> np.ndarray:
    """Approximate dynamic image (float64, frame shape) of T frames along axis 0."""
    alpha = rank_pool_coefficients(len(frames))
    return np.tensordot(alpha, np.asarray(frames, np.float64), axes=(0, 0))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Global min-max to [0, 255] uint8 (a constant image maps to 128)."""
    lo, hi = float(image.min()), float(image.max())
    if hi - lo < 1e-12:
        return np.full(image.shape, 128, np.uint8)
    return np.round((image - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def process_shard(faces_path: str, segments_path: str, out_path: str, provenance: dict) -> None:
    """One approximate dynamic image (uint8) per segment of every video in a shard."""
    from vfer.io import create_h5, open_h5, write_array

    with open_h5(faces_path, "faces") as faces, open_h5(segments_path, "segments") as segs, \
            create_h5(out_path, "dynamic", {"method": "approximate", "input": "rgb",
                                            **provenance}) as dst:
        for video_id in segs:
            frames = faces[video_id]["frames"][()]
            segments = segs[video_id]["segment_index"][()]
            images = np.stack([to_uint8(dynamic_image(frames[s])) for s in segments])
            write_array(dst.create_group(video_id), "images", images)
