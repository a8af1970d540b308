"""CNN backbones in plain torch. Each model exposes ``features(x)`` (the layer whose output
vfer stores) and ``forward(x)`` (class logits, for fine-tuning)."""

from __future__ import annotations

import torch
from torch import nn

#: Input normalisation shared by all image backbones (torchvision's ImageNet statistics).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class SmallCNN(nn.Module):
    """The small CNN of paper 001: two conv layers, a down-sampling layer, FC 64, softmax.

    Defaults follow the paper (8 and 16 maps, 5x5 and 3x3 kernels, FC 64); ``pool`` sets the
    down-sampling factor so that the FC input stays small at any input size.
    """

    def __init__(self, num_classes: int, input_size: int = 128, channels: tuple[int, int] = (8, 16),
                 kernels: tuple[int, int] = (5, 3), pool: int = 4, fc: int = 64,
                 dropout: float = 0.3):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, channels[0], kernels[0], padding=kernels[0] // 2), nn.ReLU(inplace=True),
            nn.Conv2d(channels[0], channels[1], kernels[1], padding=kernels[1] // 2),
            nn.ReLU(inplace=True), nn.MaxPool2d(pool))
        side = input_size // pool
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(channels[1] * side * side, fc),
                                nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(fc, num_classes))
        self.feature_dim = fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build(name: str, num_classes: int, input_size: int, **kwargs) -> nn.Module:
    """Construct a backbone by config name."""
    if name == "small_cnn":
        return SmallCNN(num_classes, input_size=input_size, **kwargs)
    raise ValueError(f"unknown backbone {name!r}")
