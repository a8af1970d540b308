"""Fusions: sequences (B, T, *shape_i) of several branches -> one sequence (B, T, *shape),
combined per time step along dim 2 (vector features or map channels)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _shapes(in_shapes: Sequence[Sequence[int]], kind: str) -> list[tuple[int, ...]]:
    shapes = [tuple(int(v) for v in s) for s in in_shapes]
    if not shapes:
        raise ValueError(f"{kind} fusion needs at least one input")
    if any(len(s) not in (1, 3) for s in shapes):
        raise ValueError(f"{kind} fusion takes vectors (D,) or maps (C, H, W), got {shapes}")
    return shapes


def _equal(in_shapes: Sequence[Sequence[int]], kind: str) -> tuple[int, ...]:
    shapes = _shapes(in_shapes, kind)
    if len(set(shapes)) > 1:
        raise ValueError(f"{kind} fusion needs equal shapes, got {shapes}")
    return shapes[0]


class Sum(nn.Module):
    """Element-wise sum."""

    def __init__(self, in_shapes: Sequence[Sequence[int]]):
        super().__init__()
        self.out_shape = _equal(in_shapes, "sum")

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(xs)).sum(0)


class Product(nn.Module):
    """Element-wise product."""

    def __init__(self, in_shapes: Sequence[Sequence[int]]):
        super().__init__()
        self.out_shape = _equal(in_shapes, "product")

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(xs)).prod(0)


class Concat(nn.Module):
    """Concatenation of features (vectors) or channels (maps of equal H, W)."""

    def __init__(self, in_shapes: Sequence[Sequence[int]]):
        super().__init__()
        shapes = _shapes(in_shapes, "concat")
        if len({s[1:] for s in shapes}) > 1 or len({len(s) for s in shapes}) > 1:
            raise ValueError(f"concat fusion needs all vectors or all maps of one size, "
                             f"got {shapes}")
        self.out_shape = (sum(s[0] for s in shapes),) + shapes[0][1:]

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(xs), 2)


class WeightedSum(nn.Module):
    """exp(a) * sum_i x_i with a learned per-dimension (per-channel for maps) a, initially 0
    (paper 002's aggregation)."""

    def __init__(self, in_shapes: Sequence[Sequence[int]]):
        super().__init__()
        self.out_shape = _equal(in_shapes, "weighted_sum")
        self.a = nn.Parameter(torch.zeros(self.out_shape[0], *(1,) * (len(self.out_shape) - 1)))

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.exp(self.a) * torch.stack(list(xs)).sum(0)
