"""A network composed of registered pieces from a plain (JSON-able) spec.

Per branch: backbone taps (shared over time steps) -> ``pool`` of map taps per step -> the
branch's own temporal model (optional, T -> 1) -> ``activation`` -> ``project``. Then the
sequences of all branches are aligned in time and fused per step, reduced over time by the
network's temporal model, and the head gives (features, logits). All sizes come from a dry
pass over a dummy batch at construction.

Spec keys (defaults in brackets)::

    name                         the network's name (in every error message)
    branches: [                  ordered; inputs[branch name] is (B, T, C, H, W) or (B, T, D)
      {name, input, steps, channels, size [None: vector input (B, T, channels)],
       backbone, backbone_options [{}], share [None: or an earlier branch's name],
       taps [the backbone's default tap], pool [none|avg|max|mspp], temporal [None],
       activation [none|relu|tanh|l2], project [None: or a Linear's output size]}]
    fusion [None]                {"kind": sum|concat|... or None, "gating": None or
                                  {"from": branch, "to": branch, "at": [block names]}}
    temporal [None]              {"kind": ..., options}; None needs a fused sequence of T = 1
    head                         {"kind": "mlp", "hidden": [...], "dropout": p} or
                                 {"kind": "backbone"} (one branch, one vector tap)
    features [penultimate]       or "pooled" (the head's input)

Fusion kind None means no fusion: the network's temporal model gets the list of all
sequences when it accepts ``taps`` (nested_lstm; no time alignment), else there must be
exactly one sequence. Time alignment before a fusion: T = 1 broadcasts; lengths L and L - 1
(frames and the flows between them) keep the first L - 1 steps; nothing else is allowed.
Gating (Feichtenhofer's multiplier): at each named block the ``to`` branch's residual branch
receives its input times the ``from`` branch's input to the same block; a T = 1 gater is
broadcast over time, a gater with T > 1 is averaged over time for a T = 1 gated branch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vfer.nets.backbones import build_backbone, mspp
from vfer.nets.heads import BackboneHead, MLPHead
from vfer.nets.registry import BACKBONES, FUSIONS, HEADS, TEMPORAL

POOLS = ("none", "avg", "max", "mspp")
ACTIVATIONS = ("none", "relu", "tanh", "l2")
FEATURES = ("penultimate", "pooled")
_TOP_KEYS = {"name", "branches", "fusion", "temporal", "head", "features"}
_BRANCH_KEYS = {"name", "input", "steps", "channels", "size", "backbone", "backbone_options",
                "share", "taps", "pool", "temporal", "activation", "project"}
_BRANCH_REQUIRED = ("name", "input", "steps", "channels", "backbone")


@dataclass(frozen=True)
class Branch:
    """One branch of a network spec, with defaults filled in."""

    name: str
    input: str
    steps: int
    channels: int
    size: int | None
    backbone: str
    backbone_options: Mapping
    share: str | None
    taps: tuple[str, ...]
    pool: str
    temporal: Mapping | None
    activation: str
    project: int | None


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _activate(kind: str, x: torch.Tensor) -> torch.Tensor:
    if kind == "relu":
        return torch.relu(x)
    if kind == "tanh":
        return torch.tanh(x)
    if kind == "l2":
        return nn.functional.normalize(x, dim=-1)
    return x


def _pool(kind: str, x: torch.Tensor) -> torch.Tensor:
    """Map sequences (B, T, C, H, W) -> vector sequences per ``kind``; others unchanged."""
    if x.dim() != 5 or kind == "none":
        return x
    maps = x.flatten(0, 1)
    if kind == "avg":
        y = nn.functional.adaptive_avg_pool2d(maps, 1).flatten(1)
    elif kind == "max":
        y = nn.functional.adaptive_max_pool2d(maps, 1).flatten(1)
    else:
        y = mspp(maps)
    return y.unflatten(0, x.shape[:2])


class Network(nn.Module):
    """Branches -> time alignment -> fusion -> temporal model -> head, from ``spec``."""

    def __init__(self, spec: Mapping, num_classes: int):
        super().__init__()
        self.spec = copy.deepcopy(dict(spec))
        self.name = str(self.spec.get("name", "?"))
        self._parse(self.spec)
        self.backbone_modules = nn.ModuleDict()
        self._owner: dict[str, str] = {}
        for b in self.branches:
            if b.share is not None:
                self._owner[b.name] = self._owner[b.share]
                continue
            try:
                module = build_backbone(b.backbone, num_classes, b.size, b.channels,
                                        **b.backbone_options)
            except (ValueError, TypeError) as exc:
                raise self._error(f"branch {b.name!r}", f"backbone {b.backbone!r}: {exc}") from exc
            self.backbone_modules[b.name] = module
            self._owner[b.name] = b.name
        self._check_gating()
        self.branch_temporals = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        self.eval()
        with torch.no_grad():
            self._build(num_classes)
        self.train()

    # -- spec ------------------------------------------------------------------------------

    def _error(self, where: str, message: str) -> ValueError:
        return ValueError(f"network {self.name!r}, {where}: {message}")

    def _keys(self, d, allowed: set, where: str) -> None:
        if not isinstance(d, Mapping):
            raise self._error(where, f"must be a mapping, got {type(d).__name__}")
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise self._error(where, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")

    def _piece(self, registry, d, where: str) -> dict:
        """A {"kind": ..., options} mapping checked against ``registry``."""
        if not isinstance(d, Mapping) or "kind" not in d:
            raise self._error(where, f"must be a mapping with a 'kind', got {d!r}")
        if d["kind"] not in registry:
            raise self._error(where, f"unknown {registry.kind} {d['kind']!r}; "
                                     f"choose from {sorted(registry)}")
        self._keys(d, {"kind", *registry.meta(d["kind"])["options"]}, where)
        return dict(d)

    def _parse(self, spec: Mapping) -> None:
        self._keys(spec, _TOP_KEYS, "spec")
        for key in ("name", "branches", "head"):
            if key not in spec:
                raise self._error("spec", f"missing key {key!r}")
        if not isinstance(spec["branches"], list) or not spec["branches"]:
            raise self._error("branches", "must be a non-empty list")
        self.branches: list[Branch] = []
        for i, raw in enumerate(spec["branches"]):
            self.branches.append(self._parse_branch(raw, i))
        self._by_name = {b.name: b for b in self.branches}
        fusion = spec.get("fusion") or {}
        self._keys(fusion, {"kind", "gating"}, "fusion")
        self.fusion_kind = fusion.get("kind")
        if self.fusion_kind is not None and self.fusion_kind not in FUSIONS:
            raise self._error("fusion", f"unknown fusion {self.fusion_kind!r}; "
                                        f"choose from {sorted(FUSIONS)}")
        self.gating = self._gating(fusion.get("gating"))
        temporal = spec.get("temporal")
        self.temporal_spec = None if temporal is None else self._piece(TEMPORAL, temporal,
                                                                       "temporal")
        self.head_spec = self._piece(HEADS, spec["head"], "head")
        self.features = spec.get("features", "penultimate")
        if self.features not in FEATURES:
            raise self._error("features", f"must be one of {list(FEATURES)}, got {self.features!r}")
        if self.head_spec["kind"] == "backbone":
            self._check_backbone_head()

    def _parse_branch(self, raw, i: int) -> Branch:
        where = f"branch {raw.get('name', i) if isinstance(raw, Mapping) else i!r}"
        self._keys(raw, _BRANCH_KEYS, where)
        for key in _BRANCH_REQUIRED:
            if key not in raw:
                raise self._error(where, f"missing key {key!r}")
        name = raw["name"]
        if not isinstance(name, str) or not name:
            raise self._error(where, f"name must be a non-empty string, got {name!r}")
        where = f"branch {name!r}"
        if any(b.name == name for b in self.branches):
            raise self._error(where, "name used twice")
        if not isinstance(raw["input"], str):
            raise self._error(where, f"input must be a string, got {raw['input']!r}")
        for key in ("steps", "channels"):
            if not _count(raw[key]):
                raise self._error(where, f"{key} must be a positive integer, got {raw[key]!r}")
        size = raw.get("size")
        if size is not None and not _count(size):
            raise self._error(where, f"size must be a positive integer or None, got {size!r}")
        backbone = raw["backbone"]
        if backbone not in BACKBONES:
            raise self._error(where, f"unknown backbone {backbone!r}; "
                                     f"choose from {sorted(BACKBONES)}")
        meta = BACKBONES.meta(backbone)
        if meta["inputs"] == "image" and size is None:
            raise self._error(where, f"backbone {backbone!r} takes images: size is required")
        if meta["inputs"] == "vector" and size is not None:
            raise self._error(where, f"backbone {backbone!r} takes vectors: size must be None")
        options = raw.get("backbone_options") or {}
        self._keys(options, set(meta["options"]), f"{where} backbone_options")
        share = raw.get("share")
        if share is not None:
            if share not in {b.name for b in self.branches}:
                raise self._error(where, f"share {share!r} is not an earlier branch")
            other = next(b for b in self.branches if b.name == share)
            mine = (backbone, dict(options), raw["channels"], size)
            theirs = (other.backbone, dict(other.backbone_options), other.channels, other.size)
            if mine != theirs:
                raise self._error(where, f"shares {share!r} but (backbone, options, channels, "
                                         f"size) differ: {mine} vs {theirs}")
        taps = raw.get("taps") or [meta["default_tap"]]
        if not isinstance(taps, (list, tuple)):
            raise self._error(where, f"taps must be a list, got {taps!r}")
        for tap in taps:
            if tap not in meta["taps"]:
                raise self._error(where, f"backbone {backbone!r} has no tap {tap!r}; "
                                         f"choose from {list(meta['taps'])}")
        pool = raw.get("pool", "none")
        if pool not in POOLS:
            raise self._error(where, f"pool must be one of {list(POOLS)}, got {pool!r}")
        temporal = raw.get("temporal")
        if temporal is not None:
            temporal = self._piece(TEMPORAL, temporal, f"{where} temporal")
        activation = raw.get("activation", "none")
        if activation not in ACTIVATIONS:
            raise self._error(where, f"activation must be one of {list(ACTIVATIONS)}, "
                                     f"got {activation!r}")
        project = raw.get("project")
        if project is not None and not _count(project):
            raise self._error(where, f"project must be a positive integer or None, got {project!r}")
        return Branch(name, raw["input"], raw["steps"], raw["channels"], size, backbone,
                      dict(options), share, tuple(taps), pool, temporal, activation, project)

    def _gating(self, gating) -> dict | None:
        if gating is None:
            return None
        where = "fusion.gating"
        self._keys(gating, {"from", "to", "at"}, where)
        for key in ("from", "to", "at"):
            if key not in gating:
                raise self._error(where, f"missing key {key!r}")
            if key != "at" and gating[key] not in self._by_name:
                raise self._error(where, f"{key} {gating[key]!r} is not a branch")
        src, dst = self._by_name[gating["from"]], self._by_name[gating["to"]]
        if src is dst:
            raise self._error(where, "a branch cannot gate itself")
        for b in (src, dst):
            if not BACKBONES.meta(b.backbone).get("blocks"):
                raise self._error(where, f"branch {b.name!r}: backbone {b.backbone!r} has no "
                                         "residual blocks to gate")
        if (src.backbone, src.backbone_options, src.size) != \
                (dst.backbone, dst.backbone_options, dst.size):
            raise self._error(where, f"branches {src.name!r} and {dst.name!r} need the same "
                                     "backbone, options and size")
        if not (src.steps == dst.steps or 1 in (src.steps, dst.steps)):
            raise self._error(where, f"steps {src.steps} of {src.name!r} and {dst.steps} of "
                                     f"{dst.name!r}: a gater needs the same steps, or one side 1")
        at = gating["at"]
        if not isinstance(at, (list, tuple)) or not at or \
                not all(isinstance(a, str) for a in at):
            raise self._error(where, f"at must be a non-empty list of block names, got {at!r}")
        return {"from": src.name, "to": dst.name, "at": tuple(at)}

    def _check_gating(self) -> None:
        """Gated blocks exist; ``_gate_input`` maps each to the block whose output feeds it."""
        if self.gating is None:
            return
        names = [n for n, _ in self._backbone(self.gating["to"]).blocks()]
        for block in self.gating["at"]:
            if block not in names[1:]:
                raise self._error("fusion.gating", f"unknown block {block!r}; blocks: {names[1:]}")
        self._gate_input = {block: names[names.index(block) - 1] for block in self.gating["at"]}

    def _check_backbone_head(self) -> None:
        where = "head"
        if len(self.branches) != 1 or len(self.branches[0].taps) != 1:
            raise self._error(where, "kind 'backbone' needs one branch with one tap")
        b = self.branches[0]
        meta = BACKBONES.meta(b.backbone)
        if meta["head"] is None or meta["taps"][b.taps[0]] != "vector":
            raise self._error(where, f"kind 'backbone' needs a vector tap of a backbone with a "
                                     f"head, got {b.backbone!r} tap {b.taps[0]!r}")
        if b.project is not None:
            raise self._error(where, f"kind 'backbone' cannot follow a projection "
                                     f"(branch {b.name!r})")

    # -- construction ----------------------------------------------------------------------

    def _dummy(self) -> dict[str, torch.Tensor]:
        return {b.name: torch.zeros(1, b.steps, b.channels, b.size, b.size)
                if b.size is not None else torch.zeros(1, b.steps, b.channels)
                for b in self.branches}

    def _temporal_model(self, spec: Mapping, xs: list[torch.Tensor], where: str) -> nn.Module:
        kind = spec["kind"]
        options = {k: v for k, v in spec.items() if k != "kind"}
        accepts = TEMPORAL.meta(kind)["accepts"]
        shapes = [tuple(x.shape[2:]) for x in xs]
        if accepts == "taps":
            if any(len(s) != 1 for s in shapes):
                raise self._error(where, f"{kind!r} takes vector sequences, got per-step shapes "
                                         f"{shapes} (pool the map taps)")
            arg = shapes
        else:
            if len(xs) != 1:
                raise self._error(where, f"{kind!r} takes one sequence, got {len(xs)}: fuse "
                                         "them or use one tap")
            if (len(shapes[0]) == 1) != (accepts == "vector"):
                raise self._error(where, f"{kind!r} takes {accepts} sequences, got per-step shape "
                                         f"{shapes[0]}")
            arg = shapes[0]
        try:
            return TEMPORAL.get(kind)(arg, **options)
        except (ValueError, TypeError) as exc:
            raise self._error(where, str(exc)) from exc

    def _build(self, num_classes: int) -> None:
        """Creates the pieces after the backbones, from a dry pass of a dummy batch."""
        try:
            encoded = self._encode(self._dummy())
        except RuntimeError as exc:
            raise self._error("backbones", f"cannot take the branches' inputs: {exc}") from exc
        seqs, labels = [], []
        for b in self.branches:
            xs = self._post(b, encoded[b.name], build=True)
            seqs += xs
            labels += [b.name] if b.temporal else [f"{b.name}.{t}" for t in b.taps]
        taps_temporal = self._takes_taps()
        self.fusion = None
        if self.fusion_kind is None:
            if not taps_temporal and len(seqs) != 1:
                raise self._error("fusion", f"{len(seqs)} sequences ({labels}) need a fusion")
        elif taps_temporal:
            raise self._error("fusion", f"temporal {self.temporal_spec['kind']!r} takes the tap "
                                        "sequences unfused: set fusion kind None")
        else:
            self._common_steps(seqs, labels)
            try:
                self.fusion = FUSIONS.get(self.fusion_kind)(
                    [tuple(x.shape[2:]) for x in seqs])
            except ValueError as exc:
                raise self._error("fusion", f"{exc} ({labels})") from exc
        x = self._fuse(seqs)
        self.temporal = None
        if self.temporal_spec is not None:
            self.temporal = self._temporal_model(self.temporal_spec,
                                                 x if taps_temporal else [x], "temporal")
        elif x.shape[1] != 1:
            raise self._error("temporal", f"None needs a sequence of 1 step, got {x.shape[1]}")
        z = self._reduce(x)
        if z.dim() != 2:
            raise self._error("temporal", f"the head needs a vector, got per-segment shape "
                                          f"{tuple(z.shape[1:])}")
        options = {k: v for k, v in self.head_spec.items() if k != "kind"}
        if self.head_spec["kind"] == "mlp":
            self.head = MLPHead(z.shape[1], num_classes, **options)
        else:
            b = self.branches[0]
            tap_dim = encoded[b.name][0].shape[-1]
            if z.shape[1] != tap_dim:
                raise self._error("head", f"kind 'backbone' needs the tap's size {tap_dim} "
                                          f"after the temporal model, got {z.shape[1]}")
            self.head = BackboneHead(self._backbone(b.name), b.taps[0])
        features, _ = self.head(z)
        self.feature_dim = int((z if self.features == "pooled" else features).shape[1])

    def _common_steps(self, seqs: list[torch.Tensor], labels: list[str]) -> int:
        lengths = sorted({x.shape[1] for x in seqs} - {1})
        if len(lengths) > 2 or (len(lengths) == 2 and lengths[1] - lengths[0] != 1):
            found = {label: x.shape[1] for label, x in zip(labels, seqs)}
            raise self._error("fusion", f"cannot align time steps {found}: equal, 1, "
                                        "or L and L - 1")
        return lengths[0] if lengths else 1

    # -- forward ---------------------------------------------------------------------------

    def _backbone(self, branch: str) -> nn.Module:
        return self.backbone_modules[self._owner[branch]]

    def _run_backbone(self, b: Branch, x: torch.Tensor, extra: Sequence[str] = (),
                      gates: dict | None = None) -> tuple[list, list]:
        """Tap sequences (B, T, ...) of branch ``b``, and those at ``extra`` (block) taps."""
        backbone = self._backbone(b.name)
        names = list(b.taps) + list(extra)
        try:
            if BACKBONES.meta(b.backbone).get("clip"):
                ys = backbone.tap(x.transpose(1, 2), names)
            else:
                ys = backbone.tap(x.flatten(0, 1), names, **({"gates": gates} if gates else {}))
                ys = [y.unflatten(0, x.shape[:2]) for y in ys]
        except ValueError as exc:
            raise self._error(f"branch {b.name!r}", str(exc)) from exc
        return ys[:len(b.taps)], ys[len(b.taps):]

    def _encode(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        """Every branch's tap sequences; a gater runs first and hands its block inputs over."""
        out, gates = {}, None
        if self.gating is not None:
            src, dst = self._by_name[self.gating["from"]], self._by_name[self.gating["to"]]
            at = self.gating["at"]
            out[src.name], maps = self._run_backbone(
                src, inputs[src.name], [self._gate_input[a] for a in at])
            gates = {a: self._gate(m, inputs[dst.name].shape[1]) for a, m in zip(at, maps)}
        for b in self.branches:
            if b.name not in out:
                is_gated = self.gating is not None and b.name == self.gating["to"]
                out[b.name], _ = self._run_backbone(b, inputs[b.name],
                                                    gates=gates if is_gated else None)
        return out

    @staticmethod
    def _gate(maps: torch.Tensor, steps: int) -> torch.Tensor:
        """Gater maps (B, T_from, C, H, W) -> the gated branch's folded (B * steps, C, H, W)."""
        if maps.shape[1] == 1 and steps > 1:
            maps = maps.expand(-1, steps, *maps.shape[2:])
        elif steps == 1 and maps.shape[1] > 1:
            maps = maps.mean(1, keepdim=True)
        return maps.flatten(0, 1)

    def _post(self, b: Branch, xs: list[torch.Tensor], build: bool = False
                ) -> list[torch.Tensor]:
        """Pooling, temporal model, activation and projection of one branch's sequences; with
        ``build`` (the dry pass) the temporal model and projections are created first."""
        where = f"branch {b.name!r}"
        xs = [_pool(b.pool, x) for x in xs]
        if b.temporal is not None:
            if build:
                self.branch_temporals[b.name] = self._temporal_model(b.temporal, xs,
                                                                     f"{where} temporal")
            model = self.branch_temporals[b.name]
            taps = TEMPORAL.meta(b.temporal["kind"])["accepts"] == "taps"
            xs = [model(xs if taps else xs[0]).unsqueeze(1)]
        if build and any(x.dim() != 3 for x in xs) and (b.activation == "l2" or b.project):
            raise self._error(where, "l2 and project need vectors: pool the map taps")
        xs = [_activate(b.activation, x) for x in xs]
        if b.project is not None:
            if build:
                self.projections[b.name] = nn.ModuleList(nn.Linear(x.shape[-1], b.project)
                                                         for x in xs)
            xs = [p(x) for p, x in zip(self.projections[b.name], xs)]
        return xs

    def _fuse(self, seqs: list[torch.Tensor]):
        """Aligned and fused sequence, or the list / the one sequence without fusion."""
        if self.fusion is None:
            return seqs if self._takes_taps() else seqs[0]
        longer = [x.shape[1] for x in seqs if x.shape[1] > 1]
        t = min(longer) if longer else 1  # L and L - 1 align on the first L - 1 steps
        return self.fusion([x.expand(-1, t, *x.shape[2:]) if x.shape[1] == 1 else x[:, :t]
                            for x in seqs])

    def _takes_taps(self) -> bool:
        return self.temporal_spec is not None and \
            TEMPORAL.meta(self.temporal_spec["kind"])["accepts"] == "taps"

    def _reduce(self, x) -> torch.Tensor:
        return self.temporal(x) if self.temporal is not None else x[:, 0]

    def _check_inputs(self, inputs: Mapping[str, torch.Tensor]) -> None:
        """Each branch's input has its shape; fewer time steps than ``steps`` are allowed (a
        sample of the segment's steps, as training with ``sample_steps`` draws) except for
        backbones that convolve over time."""
        steps = {}
        for b in self.branches:
            if b.name not in inputs:
                raise self._error(f"branch {b.name!r}", "no input given")
            want = (b.channels,) + ((b.size, b.size) if b.size is not None else ())
            got = tuple(inputs[b.name].shape[1:])
            clip = BACKBONES.meta(b.backbone).get("clip")
            if got[1:] != want or not (got[0] == b.steps or (not clip and got[0] <= b.steps)):
                raise self._error(f"branch {b.name!r}", f"input shape (B, *{got}), expected "
                                                        f"(B, {', '.join(map(str, (b.steps,) + want))})")
            steps[b.name] = got[0] if b.steps > 1 else None
        sampled = {t for name, t in steps.items() if t is not None}
        full = {b.steps for b in self.branches if b.steps > 1}
        if sampled != full and len(sampled) > 1:
            raise self._error("inputs", f"sampled time steps differ between branches: {steps}")

    def features_and_logits(self, inputs: Mapping[str, torch.Tensor]
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (B, feature_dim), logits (B, K)) of a batch of segments."""
        self._check_inputs(inputs)
        encoded = self._encode(inputs)
        seqs = [x for b in self.branches for x in self._post(b, encoded[b.name])]
        z = self._reduce(self._fuse(seqs))
        features, logits = self.head(z)
        return (z if self.features == "pooled" else features), logits

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.features_and_logits(inputs)[1]

    def backbones(self) -> dict[str, nn.Module]:
        """Backbone modules by the first branch that uses each (for loading weights)."""
        return dict(self.backbone_modules.items())
