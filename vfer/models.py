"""CNN backbones in plain torch, with torchvision's module names so that its state_dict files
load unchanged. Every model has ``features(x, layer)`` (what vfer stores) and ``forward(x)``
(class logits, for fine-tuning); the classification head is re-sized to the task's classes.

| backbone  | input | layers (dimension)        | head         | input kind |
|-----------|-------|---------------------------|--------------|------------|
| alexnet   | 227   | fc6, fc7 (4096)           | classifier.6 | image      |
| vgg16     | 224   | fc6, fc7 (4096)           | classifier.6 | image      |
| resnet18  | 224   | pool (512)                | fc           | image      |
| resnet50  | 224   | pool (2048)               | fc           | image      |
| small_cnn | 128   | fc (64)                   | classifier.1 | image      |
| c3d       | 64    | fc (18), mspp (5376)      | classifier   | segment    |

fc6/fc7 are the activations after ReLU. ``small_cnn`` is paper 001's network (two conv layers,
down-sampling, FC 64); ``c3d`` is paper 003's 3D CNN (3x3x3 convolutions with 64 maps, BN
after the first two, 1x2x2 pooling, FC 18), whose ``mspp`` layer max-pools the last
convolution over 2x2, 4x4 and 8x8 grids per frame and averages over time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from vfer.io import file_sha256

#: Input normalisation for all image backbones (torchvision's ImageNet statistics).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class WeightsError(ValueError):
    """A weights file that cannot be loaded into a backbone; names the file and the layer."""


class _ConvPoolFC(nn.Module):
    """torchvision's AlexNet/VGG layout: ``features``, ``avgpool``, then the ``classifier``,
    whose first ``FC_END[layer]`` modules end at that fully connected layer's activation."""

    FC_END: dict[str, int] = {}

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def features_of(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        return self.classifier[:self.FC_END[layer]](self._pooled(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self._pooled(x))


class AlexNet(_ConvPoolFC):
    FC_END = {"fc6": 3, "fc7": 6}

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes))


class VGG16(_ConvPoolFC):
    FC_END = {"fc6": 2, "fc7": 5}
    CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        layers, channels = [], 3
        for v in self.CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU(inplace=True)]
                channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes))


def _conv3x3(i: int, o: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(i, o, 3, stride=stride, padding=1, bias=False)


def _conv1x1(i: int, o: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(i, o, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    def __init__(self, block, layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features_of(self, x: torch.Tensor, layer: str = "pool") -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features_of(x))


class SmallCNN(nn.Module):
    """Paper 001's per-frame CNN: two conv layers (8 and 16 maps, 5x5 and 3x3), a
    down-sampling layer, FC 64 and the class layer; ``pool`` sets the down-sampling factor."""

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

    def features_of(self, x: torch.Tensor, layer: str = "fc") -> torch.Tensor:
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features_of(x))


def mspp(x: torch.Tensor, grids: tuple[int, ...] = (2, 4, 8)) -> torch.Tensor:
    """MSPP-norm (paper 003): max pooling of each frame's maps over n x n grids, concatenated;
    (B, C, T, H, W) -> (B, T, C * sum(n^2))."""
    b, c, t = x.shape[:3]
    frames = x.transpose(1, 2).reshape(b * t, c, *x.shape[3:])
    pooled = [nn.functional.adaptive_max_pool2d(frames, n).flatten(1) for n in grids]
    return torch.cat(pooled, 1).view(b, t, -1)


class C3D(nn.Module):
    """Paper 003's 3D CNN on whole segments (B, 3, T, 64, 64):
    C(3,64)-BN-P2-C(3,64)-BN-P2-C(3,64)-C(3,64)-P2-C(3,64)-FC."""

    def __init__(self, num_classes: int, width: int = 64, fc: int = 18, dropout: float = 0.3):
        super().__init__()

        def conv(i, o, bn):
            return [nn.Conv3d(i, o, 3, padding=1)] + ([nn.BatchNorm3d(o)] if bn else []) + \
                [nn.ReLU(inplace=True)]

        pool = nn.MaxPool3d((1, 2, 2), (1, 2, 2))
        self.conv = nn.Sequential(*conv(3, width, True), pool, *conv(width, width, True),
                                  nn.MaxPool3d((1, 2, 2), (1, 2, 2)), *conv(width, width, False),
                                  *conv(width, width, False), nn.MaxPool3d((1, 2, 2), (1, 2, 2)),
                                  *conv(width, width, False))
        self.fc = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(width, fc),
                                nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(fc, num_classes))

    def features_of(self, x: torch.Tensor, layer: str = "fc") -> torch.Tensor:
        maps = self.conv(x)
        if layer == "mspp":
            return mspp(maps).mean(1)
        return self.fc(maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.fc(self.conv(x)))


@dataclass(frozen=True)
class Spec:
    input_size: int
    layers: dict[str, int]  # layer -> feature dimension (at full width)
    head: str  # module name of the class layer (re-sized; not loaded from weights files)
    segment: bool = False  # True: the input is a whole segment (B, 3, T, H, W)


SPECS = {
    "alexnet": Spec(227, {"fc6": 4096, "fc7": 4096}, "classifier.6"),
    "vgg16": Spec(224, {"fc6": 4096, "fc7": 4096}, "classifier.6"),
    "resnet18": Spec(224, {"pool": 512}, "fc"),
    "resnet50": Spec(224, {"pool": 2048}, "fc"),
    "small_cnn": Spec(128, {"fc": 64}, "classifier.1"),
    "c3d": Spec(64, {"fc": 18, "mspp": 64 * (4 + 16 + 64)}, "classifier.1", segment=True),
}


def build(name: str, num_classes: int, input_size: int | None = None, **options) -> nn.Module:
    """A backbone by config name, with a class layer for ``num_classes``."""
    if name not in SPECS:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(SPECS)}")
    if name == "alexnet":
        return AlexNet(num_classes, **options)
    if name == "vgg16":
        return VGG16(num_classes, **options)
    if name == "resnet18":
        return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)
    if name == "resnet50":
        return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)
    if name == "small_cnn":
        return SmallCNN(num_classes, input_size=input_size or SPECS[name].input_size, **options)
    return C3D(num_classes, **options)


def load_weights(model: nn.Module, path: str | os.PathLike, head: str) -> dict:
    """Load a torchvision-format state_dict file (weights_only) into ``model``.

    Every tensor except the class layer ``head`` must be present with the model's shape; the
    head is taken only when it already has the model's number of classes. Raises WeightsError
    naming the file and the first offending layer. Returns what was loaded and the file's hash.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise WeightsError(f"{path}: not a readable torch state_dict ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state_dict (layer name -> tensor)")
    own = model.state_dict()
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise WeightsError(f"{path}: layer {unexpected[0]!r} does not exist in "
                           f"{type(model).__name__} ({len(unexpected)} unknown layers)")
    loaded, head_loaded = {}, True
    for key, tensor in own.items():
        if key not in state:
            raise WeightsError(f"{path}: layer {key!r} is missing from the file")
        shape = tuple(state[key].shape)
        if shape != tuple(tensor.shape):
            if key.startswith(head + "."):
                head_loaded = False
                continue
            raise WeightsError(f"{path}: layer {key!r} has shape {shape} in the file, the "
                               f"model needs {tuple(tensor.shape)}")
        loaded[key] = state[key]
    if not head_loaded:
        loaded = {k: v for k, v in loaded.items() if not k.startswith(head + ".")}
    model.load_state_dict(loaded, strict=False)
    return {"path": path, "sha256": file_sha256(path), "head_loaded": head_loaded}
