"""Heads: a segment's pooled vector z (B, D) -> (features, class logits)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLPHead(nn.Module):
    """Hidden layers (dropout, linear, ReLU) then dropout and the class layer; features are
    the last hidden layer's output, or z itself without hidden layers."""

    def __init__(self, in_dim: int, num_classes: int, hidden: Sequence[int] = (),
                 dropout: float = 0.5):
        super().__init__()
        layers, d = [], in_dim
        for n in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(d, n), nn.ReLU()]
            d = n
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(d, num_classes))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.hidden(z)
        return features, self.out(features)


class BackboneHead(nn.Module):
    """A backbone's own layers after vector tap ``tap`` (its modules, shared); features = the
    last hidden layer: the output of every layer but the class layer (AlexNet or VGG tapped at
    fc6: fc7; a head that is only the class layer: z)."""

    def __init__(self, backbone: nn.Module, tap: str):
        super().__init__()
        self.layers = backbone.head_from(tap)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.layers, nn.Sequential) and len(self.layers) > 1:
            z = self.layers[:-1](z)
            return z, self.layers[-1](z)
        return z, self.layers(z)
