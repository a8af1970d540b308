"""Feature-level fusion of per-stream video features (METHODS.md, Zhou 3.4)."""

from __future__ import annotations

import numpy as np

FUSIONS = ("concat", "sum", "product")


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
