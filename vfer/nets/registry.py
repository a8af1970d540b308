"""The names of every network piece, with what the configuration needs to know about each.

A registry maps a config name to the class or function that implements it ("module:attr",
imported on first use) and to static facts (input size, taps, what a temporal model accepts).
The facts live here, apart from the torch modules, so that checking a configuration (every
parse of the workflow) never imports torch. The config schema's enums are these keys; a test
checks that they agree and that every target exists.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:attribute"
    meta: Mapping = field(default_factory=dict)


class Registry:
    """Named entries of one kind (backbone, temporal model, ...), resolved lazily."""

    def __init__(self, kind: str, entries: list[Entry]):
        self.kind = kind
        self._entries = {e.name: Entry(e.name, e.target, MappingProxyType(dict(e.meta)))
                         for e in entries}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose from {sorted(self._entries)}")
        return self._entries[name]

    def meta(self, name: str) -> Mapping:
        return self.entry(name).meta

    def get(self, name: str):
        """The implementing class or function (imports its module)."""
        module, attr = self.entry(name).target.split(":")
        return getattr(importlib.import_module(module), attr)

    def build(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)


_B = "vfer.nets.backbones"
_RESNET_TAPS = {"layer1": "map", "layer2": "map", "layer3": "map", "layer4": "map",
                "pool": "vector"}
_BLOCKS18 = {"layer1": 2, "layer2": 2, "layer3": 2, "layer4": 2}
_BLOCKS50 = {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}

#: Per-input feature extractors. ``taps``: tap name -> "map" or "vector" (what it outputs per
#: image, or per time step for clip backbones); ``clip``: takes a whole segment at once;
#: ``head``: the class layer's module name (re-sized, not loaded from weights files);
#: ``inputs``: "image" (a branch needs a size), "vector" (size None) or "any";
#: ``options``: keys allowed under a branch's ``backbone_options``; ``blocks``: residual blocks
#: per stage, which multiplicative gating can address (``layer3.0`` = torchvision's conv4_1);
#: ``optional_weights``: substrings of parameter names that ``torchvision_file`` lacks (left at
#: initialisation: ``load_weights(..., optional=...)``).
BACKBONES = Registry("backbone", [
    Entry("alexnet", f"{_B}:AlexNet", {
        "inputs": "image",
        "input_size": 227, "taps": {"conv5": "map", "fc6": "vector", "fc7": "vector"},
        "default_tap": "fc6", "head": "classifier.6", "options": ("width",),
        "torchvision_file": "alexnet-owt-7be5be79.pth"}),
    Entry("vgg16", f"{_B}:VGG16", {
        "inputs": "image",
        "input_size": 224, "taps": {"pool5": "map", "fc6": "vector", "fc7": "vector"},
        "default_tap": "fc6", "head": "classifier.6", "options": ("width",),
        "torchvision_file": "vgg16-397923af.pth"}),
    Entry("resnet18", f"{_B}:resnet18", {
        "inputs": "image",
        "input_size": 224, "taps": _RESNET_TAPS, "default_tap": "pool", "head": "fc",
        "options": ("width",), "blocks": _BLOCKS18, "torchvision_file": "resnet18-f37072fd.pth"}),
    Entry("resnet50", f"{_B}:resnet50", {
        "inputs": "image",
        "input_size": 224, "taps": _RESNET_TAPS, "default_tap": "pool", "head": "fc",
        "options": ("width",), "blocks": _BLOCKS50, "torchvision_file": "resnet50-0676ba61.pth"}),
    Entry("se_resnet18", f"{_B}:se_resnet18", {
        "inputs": "image",
        "input_size": 224, "taps": _RESNET_TAPS, "default_tap": "pool", "head": "fc",
        "options": ("width", "se_reduction"), "blocks": _BLOCKS18,
        "optional_weights": (".se.",),
        "torchvision_file": "resnet18-f37072fd.pth"}),
    Entry("se_resnet50", f"{_B}:se_resnet50", {
        "inputs": "image",
        "input_size": 224, "taps": _RESNET_TAPS, "default_tap": "pool", "head": "fc",
        "options": ("width", "se_reduction"), "blocks": _BLOCKS50,
        "optional_weights": (".se.",),
        "torchvision_file": "resnet50-0676ba61.pth"}),
    Entry("small_cnn", f"{_B}:SmallCNN", {
        "inputs": "image",
        "input_size": 128, "taps": {"conv": "map", "fc": "vector"}, "default_tap": "fc",
        "head": "classifier.1", "options": ("channels", "kernels", "pool", "fc")}),
    Entry("c3d", f"{_B}:C3D", {
        "inputs": "image",
        "input_size": 64, "clip": True,
        "taps": {"conv1": "map", "conv2": "map", "conv3": "map", "conv4": "map",
                 "conv5": "map", "fc": "vector"},
        "default_tap": "fc", "head": "classifier.1", "options": ("width", "fc")}),
    Entry("identity", f"{_B}:Identity", {
        "inputs": "any", "input_size": None, "taps": {"input": "same"},
        "default_tap": "input", "head": None, "options": ()}),
    Entry("mlp", f"{_B}:MLP", {
        "inputs": "vector", "input_size": None, "taps": {"fc": "vector"},
        "default_tap": "fc", "head": None, "options": ("hidden",)}),
])

_T = "vfer.nets.temporal"
#: Models over a segment's time steps: (B, T, ...) -> (B, D). ``accepts``: vector sequences
#: (B, T, D), map sequences (B, T, C, H, W), or ``taps``: one vector sequence per tap.
#: ``learned``: it has parameters that only training sets.
TEMPORAL = Registry("temporal model", [
    Entry("mean", f"{_T}:Mean", {"accepts": "vector", "options": (), "learned": False}),
    Entry("max", f"{_T}:Max", {"accepts": "vector", "options": (), "learned": False}),
    Entry("lstm", f"{_T}:LSTM", {"accepts": "vector", "learned": True,
                                 "options": ("hidden", "layers", "dropout")}),
    Entry("bilstm", f"{_T}:BiLSTM", {"accepts": "vector", "learned": True,
                                     "options": ("hidden", "layers", "dropout")}),
    Entry("convlstm", f"{_T}:ConvLSTM", {"accepts": "map", "learned": True,
                                         "options": ("channels", "kernels", "pool")}),
    Entry("enhanced_convlstm", f"{_T}:EnhancedConvLSTM", {
        "accepts": "map", "learned": True, "options": ("channels", "kernels", "pool", "groups")}),
    Entry("nested_lstm", f"{_T}:NestedLSTM", {
        "accepts": "taps", "learned": True,
        "options": ("hidden", "layers", "c_hidden", "c_layers")}),
])

_F = "vfer.nets.fusion"
#: How a network's branches are combined, per time step (B, T, *shape_i) -> (B, T, *shape).
#: ``learned``: it has parameters that only training sets.
FUSIONS = Registry("fusion", [
    Entry("sum", f"{_F}:Sum", {"equal_shapes": True, "learned": False}),
    Entry("product", f"{_F}:Product", {"equal_shapes": True, "learned": False}),
    Entry("concat", f"{_F}:Concat", {"equal_shapes": False, "learned": False}),
    Entry("weighted_sum", f"{_F}:WeightedSum", {"equal_shapes": True, "learned": True}),
])

_H = "vfer.nets.heads"
#: What turns a segment's representation into class logits.
HEADS = Registry("head", [
    Entry("mlp", f"{_H}:MLPHead", {"options": ("hidden", "dropout")}),
    Entry("backbone", f"{_H}:BackboneHead", {"options": ()}),
])

_O = "vfer.training"
OPTIMIZERS = Registry("optimizer", [
    Entry("adam", f"{_O}:adam", {}),
    Entry("sgd", f"{_O}:sgd", {}),
    Entry("adadelta", f"{_O}:adadelta", {}),
])
SCHEDULES = Registry("learning-rate schedule", [
    Entry("constant", f"{_O}:constant_schedule", {}),
    Entry("step", f"{_O}:step_schedule", {}),
    Entry("cosine", f"{_O}:cosine_schedule", {}),
])
INITS = Registry("initialisation", [
    Entry("default", f"{_O}:default_init", {}),
    Entry("xavier", f"{_O}:xavier_init", {}),
    Entry("kaiming", f"{_O}:kaiming_init", {}),
])

_I = "vfer.inputs"
#: What a branch reads per segment. ``stages``: the stage files it reads; ``steps``: time steps
#: per segment (``length`` frames, ``length - 1`` flows, or one pooled image); ``vector``:
#: the size of one step's vector (images: null); ``flow_x``: channel 0 is a horizontal flow,
#: negated by horizontal flips.
INPUTS = Registry("input kind", [
    Entry("frames", f"{_I}:Frames", {"stages": ("faces", "segments"), "steps": "length",
                                     "vector": None, "flow_x": False}),
    Entry("flow", f"{_I}:FlowImages", {"stages": ("flow",), "steps": "length-1", "vector": None,
                                       "flow_x": True}),
    Entry("dynamic_rgb", f"{_I}:DynamicImages", {"stages": ("dynamic",), "steps": 1,
                                                 "vector": None, "flow_x": False}),
    Entry("dynamic_flow", f"{_I}:DynamicImages", {"stages": ("dynamic",), "steps": 1,
                                                  "vector": None, "flow_x": True}),
    Entry("landmarks", f"{_I}:Landmarks", {"stages": ("faces", "segments"), "steps": "length",
                                           "vector": 152 * 2, "flow_x": False}),
])

_D = "vfer.descriptors"
#: Features computed without a network (never trained); ``input``: the input kind they read.
DESCRIPTORS = Registry("descriptor", [
    Entry("landmarks", f"{_D}:landmark_features", {"input": "landmarks"}),
    Entry("hog", f"{_D}:handcrafted_features", {"input": "frames"}),
])
