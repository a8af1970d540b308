"""Per-input feature extractors in plain torch, with torchvision's module names so that its
state_dict files load unchanged (``width`` 1.0, 3 input channels).

Every backbone has the same interface:

* ``forward(x)``: class logits through its own head (torchvision behaviour);
* ``tap(x, names)``: the outputs at the named taps, in one forward pass that stops at the last
  one needed. Image backbones take (N, C, H, W) and give maps (N, C', H', W') or vectors (N, D);
  the clip backbone (c3d) takes (N, C, T, H, W) and gives maps (N, T, C', H', W') or ``fc``
  as (N, 1, D);
* ``head_from(tap)``: its own layers from a vector tap to the logits (shared modules).

| backbone     | input | taps                                  | head         |
|--------------|-------|---------------------------------------|--------------|
| alexnet      | 227   | conv5, fc6, fc7 (4096)                | classifier.6 |
| vgg16        | 224   | pool5, fc6, fc7 (4096)                | classifier.6 |
| (se_)resnet* | 224   | layer1..layer4, pool (512 / 2048)     | fc           |
| small_cnn    | 128   | conv, fc (64)                         | classifier.1 |
| c3d          | 64    | conv1..conv5, fc (18)                 | classifier.1 |
| identity     | any   | input                                 | none         |
| mlp          | D     | fc                                    | none         |

``width`` scales every channel count (and alexnet's and vgg16's 4096) for small variants.
SE-ResNets add a squeeze-excitation module ``layerI.J.se.fc1/fc2`` to every block; all their
other parameter names are torchvision's, so torchvision ResNet files load with
``load_weights(..., optional=(".se.",))``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence

import torch
from torch import nn

from vfer.io import file_sha256
from vfer.nets.registry import BACKBONES

#: Input normalisation for all image backbones (torchvision's ImageNet statistics).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class WeightsError(ValueError):
    """A weights file that cannot be loaded into a backbone; names the file and the layer."""


def _scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1."""
    return max(1, round(channels * width))


class _ChannelsLastGrad(torch.autograd.Function):
    """Identity whose gradient is handed back channels-last."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def flatten(x: torch.Tensor) -> torch.Tensor:
    """torch.flatten(x, 1). Flattening channels-last maps (N, C, H, W) copies them into
    channels-first order, so their gradient would come back channels-first, and the backward
    passes of the pooling and ReLU layers before it would work across two memory formats (the
    demo's SmallCNN training steps on a CPU core: ~12% slower, benchmarks/NOTES.md); here that
    gradient is handed back channels-last. The values are the same."""
    if (x.ndim == 4 and x.requires_grad and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)):
        x = _ChannelsLastGrad.apply(x)
    return torch.flatten(x, 1)


class Flatten(nn.Module):
    """``flatten`` as a layer (nn.Flatten's place in a Sequential; no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return flatten(x)


class Backbone(nn.Module):
    """Base of all backbones: ``tap`` runs ``_stages()`` in order, each ending at a tap."""

    TAPS: tuple[str, ...] = ()
    #: vector taps from which ``head_from`` reaches the logits
    _HEADS: tuple[str, ...] = ()

    def _stages(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        raise NotImplementedError

    def _check_taps(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in self.TAPS:
                raise ValueError(f"{type(self).__name__} has no tap {name!r}; "
                                 f"choose from {list(self.TAPS)}")

    def tap(self, x: torch.Tensor, names: Sequence[str]) -> list[torch.Tensor]:
        """The outputs at ``names`` (registry tap names) in one forward pass."""
        self._check_taps(names)
        wanted, out = set(names), {}
        for name, stage in self._stages():
            if wanted <= out.keys():
                break
            x = stage(x)
            out[name] = x
        return [out[n] for n in names]

    def head_from(self, name: str) -> nn.Module:
        """The layers from vector tap ``name`` to the class logits (the backbone's modules)."""
        self._check_taps([name])
        if name not in self._HEADS:
            raise ValueError(f"{type(self).__name__} has no head from tap {name!r}"
                             + (f"; vector taps with a head: {list(self._HEADS)}"
                                if self._HEADS else ""))
        return self._head(name)

    def _head(self, name: str) -> nn.Module:
        raise NotImplementedError


class _ConvPoolFC(Backbone):
    """torchvision's AlexNet/VGG layout: ``features``, ``avgpool``, then the ``classifier``,
    whose first ``FC_END[tap]`` modules end at that fully connected layer's activation."""

    FC_END: dict[str, int] = {}
    MAP_TAP = ""

    def _stages(self):
        fc6, fc7 = self.FC_END["fc6"], self.FC_END["fc7"]
        return [(self.MAP_TAP, self.features),
                ("fc6", lambda x: self.classifier[:fc6](flatten(self.avgpool(x)))),
                ("fc7", self.classifier[fc6:fc7])]

    def _head(self, name: str) -> nn.Module:
        return self.classifier[self.FC_END[name]:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(flatten(self.avgpool(self.features(x))))


class AlexNet(_ConvPoolFC):
    """torchvision's AlexNet; taps conv5 (after the last max pool), fc6, fc7 (after ReLU)."""

    TAPS = ("conv5", "fc6", "fc7")
    _HEADS = ("fc6", "fc7")
    FC_END = {"fc6": 3, "fc7": 6}
    MAP_TAP = "conv5"

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, width: float = 1.0,
                 in_channels: int = 3):
        super().__init__()
        c1, c2, c3, c4, c5 = (_scaled(c, width) for c in (64, 192, 384, 256, 256))
        fc = _scaled(4096, width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(c5 * 6 * 6, fc), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(fc, fc), nn.ReLU(inplace=True),
            nn.Linear(fc, num_classes))


class VGG16(_ConvPoolFC):
    """torchvision's VGG16 (no batch norm); taps pool5, fc6, fc7 (after ReLU)."""

    TAPS = ("pool5", "fc6", "fc7")
    _HEADS = ("fc6", "fc7")
    FC_END = {"fc6": 2, "fc7": 5}
    MAP_TAP = "pool5"
    CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M")

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, width: float = 1.0,
                 in_channels: int = 3):
        super().__init__()
        layers, channels = [], in_channels
        for v in self.CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out = _scaled(v, width)
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(inplace=True)]
                channels = out
        fc = _scaled(4096, width)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, fc), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc, num_classes))


def _conv3x3(i: int, o: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(i, o, 3, stride=stride, padding=1, bias=False)


def _conv1x1(i: int, o: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(i, o, 1, stride=stride, bias=False)


class SqueezeExcitation(nn.Module):
    """Channel re-weighting x * sigmoid(fc2(relu(fc1(mean_hw(x))))) (Hu et al.)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))))
        return x * s[:, :, None, None]


class _Block(nn.Module):
    """A residual unit relu(residual(x * gate) + shortcut(x)); the gate (x's shape) is
    Feichtenhofer's multiplicative gating, ``None`` = ungated."""

    def _init_se(self, channels: int, se_reduction: int | None) -> None:
        self.se = SqueezeExcitation(channels, se_reduction) if se_reduction else None

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.residual(x if gate is None else x * gate)
        if self.se is not None:
            out = self.se(out)
        return self.relu(out + identity)


class BasicBlock(_Block):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None,
                 se_reduction: int | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self._init_se(planes, se_reduction)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class Bottleneck(_Block):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None,
                 se_reduction: int | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self._init_se(planes * 4, se_reduction)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class ResNet(Backbone):
    """torchvision's ResNet (optionally with SE blocks); taps layer1..layer4 and pool (the
    flattened average pool). ``tap`` also accepts block names (a block's output) and gates."""

    TAPS = ("layer1", "layer2", "layer3", "layer4", "pool")
    _HEADS = ("pool",)

    def __init__(self, block: type[_Block], layers: Sequence[int], num_classes: int = 1000,
                 width: float = 1.0, in_channels: int = 3, se_reduction: int | None = None):
        super().__init__()
        self.inplanes = _scaled(64, width)
        self.conv1 = nn.Conv2d(in_channels, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            setattr(self, f"layer{i + 1}", self._make_layer(
                block, _scaled(planes, width), n, 1 if i == 0 else 2, se_reduction))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)

    def _make_layer(self, block: type[_Block], planes: int, blocks: int, stride: int,
                    se_reduction: int | None) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, se_reduction)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, se_reduction=se_reduction)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """("stem", conv1-bn1-relu-maxpool), then ("layerI.J", block) in forward order."""
        stem = nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)
        return [("stem", stem)] + [(f"layer{i}.{j}", b) for i in range(1, 5)
                                   for j, b in enumerate(getattr(self, f"layer{i}"))]

    def tap(self, x: torch.Tensor, names: Sequence[str],
            gates: dict[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Outputs at registry taps or block names; ``gates``: block name -> gate tensor, that
        block's residual branch receiving its input times the gate."""
        blocks = self.blocks()
        order = [n for n, _ in blocks] + ["pool"]
        last = {f"layer{i}": f"layer{i}.{len(getattr(self, f'layer{i}')) - 1}"
                for i in range(1, 5)}
        targets = [last.get(n, n) for n in names]
        for name, target in zip(names, targets):
            if target not in order:
                raise ValueError(f"{type(self).__name__} has no tap {name!r}; choose from "
                                 f"{list(self.TAPS)} or a block name {order[:-1]}")
        end = max((order.index(t) for t in targets), default=-1)
        gates = gates or {}
        for name in gates:
            if name not in order[1:-1]:
                raise ValueError(f"{type(self).__name__} cannot gate {name!r}; gated blocks "
                                 f"are {order[1:-1]}")
            if order.index(name) > end:
                raise ValueError(f"gate at {name!r} lies after the last tap {order[end]!r}")
        out = {}
        for name, block in blocks[:end + 1]:
            x = block(x) if name not in gates else block(x, gate=gates[name])
            out[name] = x
        if "pool" in targets:
            out["pool"] = flatten(self.avgpool(x))
        return [out[t] for t in targets]

    def _head(self, name: str) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.tap(x, ["pool"])[0])


def resnet18(num_classes: int = 1000, width: float = 1.0, in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, width, in_channels)


def resnet50(num_classes: int = 1000, width: float = 1.0, in_channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, width, in_channels)


def se_resnet18(num_classes: int = 1000, width: float = 1.0, se_reduction: int = 16,
                in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, width, in_channels, se_reduction)


def se_resnet50(num_classes: int = 1000, width: float = 1.0, se_reduction: int = 16,
                in_channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, width, in_channels, se_reduction)


class SmallCNN(Backbone):
    """Paper 001's per-frame CNN: two 'same' conv layers (8 and 16 maps, 5x5 and 3x3; Table 3's
    other kernel pairs work too), a ``pool`` x ``pool`` max pool (tap conv), FC 64 (tap fc)."""

    TAPS = ("conv", "fc")
    _HEADS = ("fc",)

    def __init__(self, num_classes: int, input_size: int = 128,
                 channels: Sequence[int] = (8, 16), kernels: Sequence[int] = (5, 3),
                 pool: int = 4, fc: int = 64, dropout: float = 0.3, in_channels: int = 3):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], kernels[0], padding="same"),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels[0], channels[1], kernels[1], padding="same"),
            nn.ReLU(inplace=True), nn.MaxPool2d(pool))
        side = input_size // pool
        self.fc = nn.Sequential(Flatten(), nn.Linear(channels[1] * side * side, fc),
                                nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(fc, num_classes))

    def _stages(self):
        return [("conv", self.conv), ("fc", self.fc)]

    def _head(self, name: str) -> nn.Module:
        return self.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.fc(self.conv(x)))


class C3D(Backbone):
    """Paper 003's 3D CNN on clips (N, C, T, H, W): C(3,64)-BN-P2-C(3,64)-BN-P2-C(3,64)-
    C(3,64)-P2-C(3,64)-FC, pooling 1x2x2 (time kept); taps conv1..conv5 after their ReLU and
    fc (average over time and space, FC, ReLU)."""

    TAPS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc")
    _HEADS = ("fc",)
    #: end (exclusive) of each conv tap in ``self.conv``
    _CONV_END = {"conv1": 3, "conv2": 7, "conv3": 10, "conv4": 12, "conv5": 15}

    def __init__(self, num_classes: int, width: float = 1.0, fc: int = 18, dropout: float = 0.3,
                 in_channels: int = 3):
        super().__init__()
        c = _scaled(64, width)

        def conv(i: int, bn: bool) -> list[nn.Module]:
            return [nn.Conv3d(i, c, 3, padding=1)] + ([nn.BatchNorm3d(c)] if bn else []) + \
                [nn.ReLU(inplace=True)]

        def pool() -> nn.Module:
            return nn.MaxPool3d((1, 2, 2), (1, 2, 2))

        self.conv = nn.Sequential(*conv(in_channels, True), pool(), *conv(c, True), pool(),
                                  *conv(c, False), *conv(c, False), pool(), *conv(c, False))
        self.fc = nn.Sequential(nn.AdaptiveAvgPool3d(1), Flatten(), nn.Linear(c, fc),
                                nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(fc, num_classes))

    def _stages(self):
        stages, start = [], 0
        for name, end in self._CONV_END.items():
            stages.append((name, self.conv[start:end]))
            start = end
        return stages + [("fc", self.fc)]

    def tap(self, x: torch.Tensor, names: Sequence[str]) -> list[torch.Tensor]:
        """Conv taps as (N, T, C', H', W'), fc as (N, 1, D)."""
        return [y.unsqueeze(1) if y.dim() == 2 else y.transpose(1, 2)
                for y in super().tap(x, names)]

    def _head(self, name: str) -> nn.Module:
        return self.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.fc(self.conv(x)))


class Identity(Backbone):
    """No extractor: tap ``input`` is the input itself (images or vectors); no head."""

    TAPS = ("input",)

    def _stages(self):
        return [("input", lambda x: x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class MLP(Backbone):
    """Fully connected ReLU layers on vectors (N, in_dim), e.g. landmarks; tap ``fc`` = the last
    hidden layer's output; no head (``forward`` returns that output)."""

    TAPS = ("fc",)

    def __init__(self, in_dim: int, hidden: Sequence[int] = (128,)):
        super().__init__()
        if not hidden:
            raise ValueError("MLP needs at least one hidden layer")
        layers, d = [], in_dim
        for n in hidden:
            layers += [nn.Linear(d, n), nn.ReLU(inplace=True)]
            d = n
        self.fc = nn.Sequential(*layers)

    def _stages(self):
        return [("fc", self.fc)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def mspp(x: torch.Tensor, grids: Sequence[int] = (2, 4, 8)) -> torch.Tensor:
    """MSPP (paper 003): max pooling of maps (N, C, H, W) over n x n grids, flattened and
    concatenated -> (N, C * sum(n^2))."""
    return torch.cat([flatten(nn.functional.adaptive_max_pool2d(x, n)) for n in grids], 1)


def build_backbone(name: str, num_classes: int, input_size: int | None = None,
                   in_channels: int = 3, **options) -> nn.Module:
    """A backbone by registry name, with a class layer for ``num_classes`` (if it has one);
    ``in_channels`` is the vector dimension for mlp; ``options`` as the registry allows."""
    meta = BACKBONES.meta(name)
    unknown = sorted(set(options) - set(meta["options"]))
    if unknown:
        raise ValueError(f"backbone {name!r} has no option(s) {unknown}; "
                         f"allowed: {list(meta['options'])}")
    target = BACKBONES.get(name)
    given = {"num_classes": num_classes, "in_channels": in_channels, "in_dim": in_channels,
             "input_size": input_size or meta["input_size"]}
    params = inspect.signature(target).parameters
    return target(**{k: v for k, v in given.items() if k in params}, **options)


def load_weights(model: nn.Module, path: str | os.PathLike, head: str,
                 optional: Sequence[str] = ()) -> dict:
    """Load a torchvision-format state_dict file (weights_only) into ``model``.

    Every tensor except the class layer ``head``, those whose names contain one of the
    ``optional`` substrings (left at initialisation) and BatchNorm's ``num_batches_tracked``
    (absent from torchvision's ResNet files, saved before torch counted batches; it is used
    only without a momentum) must be present with the model's shape;
    the head is taken only when it already has the model's number of classes. Raises
    WeightsError naming the file and the first offending layer. Returns what was loaded, the
    file's hash and how many optional tensors the file lacked.
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
    loaded, head_loaded, missing_optional = {}, True, 0
    for key, tensor in own.items():
        if key not in state:
            if key.endswith(".num_batches_tracked"):
                continue
            if any(s in key for s in optional):
                missing_optional += 1
                continue
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
    return {"path": path, "sha256": file_sha256(path), "head_loaded": head_loaded,
            "missing_optional": missing_optional}
