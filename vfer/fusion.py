"""Feature-level fusion of per-stream video features (docs/methods.md, fusion of stored
features): per-sample normalisation, per-stream balancing, concatenation, sum and product."""

from __future__ import annotations

import numpy as np

FUSIONS = ("concat", "sum", "product")
NORMALISATIONS = ("none", "l2", "tanh")


def normalise_rows(x: np.ndarray, method: str = "none") -> np.ndarray:
    """Each sample's feature vector (a row) as it is (``none``), divided by its L2 norm
    (``l2``; a zero row stays zero) or passed through tanh element-wise (``tanh``)."""
    if method == "none":
        return x
    if method == "l2":
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, norm, out=np.zeros(x.shape, np.float64), where=norm > 0)
    if method == "tanh":
        return np.tanh(x)
    raise ValueError(f"unknown normalisation {method!r}; choose from {NORMALISATIONS}")


def balance_weights(blocks: list[np.ndarray]) -> np.ndarray:
    """Per-block factors w_i = sqrt(V / (S v_i)), v_i the total variance of block i (the sum
    of its features' variances), V = sum v_i over the S blocks: after scaling every block holds
    V / S, so no stream dominates by its dimension, and the concatenation keeps its total
    variance V (a single block is left as it is). A constant block keeps factor 1."""
    v = np.array([b.var(axis=0).sum() for b in blocks], np.float64)
    total = v.sum()
    return np.array([np.sqrt(total / (len(v) * vi)) if vi > 0 else 1.0 for vi in v])


def fuse(blocks: list[np.ndarray], method: str = "concat") -> np.ndarray:
    """Fuse per-stream feature matrices (each videos x D_i) into one matrix.

    ``concat`` joins them; ``sum`` and ``product`` combine element-wise and need equal D_i.
    """
    if not blocks:
        raise ValueError("nothing to fuse")
    if method == "concat":
        return np.concatenate(blocks, axis=1)
    if method not in FUSIONS:
        raise ValueError(f"unknown fusion {method!r}; choose from {FUSIONS}")
    dims = {b.shape[1] for b in blocks}
    if len(dims) != 1:
        raise ValueError(f"{method} fusion needs equal feature dimensions, got {sorted(dims)}")
    out = blocks[0].astype(np.float64).copy()
    for b in blocks[1:]:
        out = out + b if method == "sum" else out * b
    return out
