"""The configuration: strict validation with defaults, cross-field checks, and the plan the
workflow runs (docs/config.md).

``load`` validates a config against workflow/schemas/config.schema.yaml (every object strict:
an unknown key stops with its path named and the nearest valid key suggested), fills the
schema's defaults, checks what the schema cannot (references between sections, taps of a
backbone, options of a temporal model, ...), and resolves everything the rules need into a
``Plan``: the flow and dynamic-image variants in use with their cache keys, and for each
stream or network its inputs and a network spec for ``vfer.nets.network.Network``.
Nothing here imports torch: every parse of the workflow runs it.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml
from jsonschema import validators

from vfer.io import sha256_of
from vfer.nets.registry import BACKBONES, DESCRIPTORS, FUSIONS, INPUTS, TEMPORAL

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key."""


# --- schema validation with defaults -----------------------------------------------------

def _strip_defaults(node):
    if isinstance(node, dict):
        return {k: _strip_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_strip_defaults(v) for v in node]
    return node


def _inherit(node):
    """Schema objects marked ``x-inherits`` take their gaps from elsewhere: no defaults."""
    if isinstance(node, dict):
        if node.get("x-inherits"):
            return _strip_defaults(node)
        return {k: _inherit(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_inherit(v) for v in node]
    return node


def load_schema(path: str | os.PathLike = SCHEMA) -> dict:
    with open(path) as fh:
        return _inherit(yaml.safe_load(fh))


def _with_defaults(cls):
    properties = cls.VALIDATORS["properties"]

    def fill(validator, props, instance, schema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if isinstance(sub, dict) and "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from properties(validator, props, instance, schema)

    return validators.extend(cls, {"properties": fill})


def _is_integer(checker, instance) -> bool:
    """Whole numbers only: the schema's 2020-12 draft takes 16.0 for an integer, and the code
    that counts with it would fail far from the config (range(16.0))."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = validators.extend(
    _with_defaults(jsonschema.Draft202012Validator),
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer))


def _where(path) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else ("." if parts else "") + str(p))
    return "".join(parts) or "(top level)"


def _message(error: jsonschema.ValidationError) -> str:
    where = _where(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        out = []
        for key in extra:
            key_path = f"{where}.{key}" if error.absolute_path else key
            hint = difflib.get_close_matches(key, allowed, n=1)
            out.append(f"unknown key {key_path!r}" + (f" (did you mean {hint[0]!r}?)" if hint
                                                       else f"; valid keys there: {allowed}"))
        return "; ".join(out)
    if error.validator == "propertyNames":
        return f"{where}: name {error.instance!r} is not allowed ({error.message})"
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not one of {error.validator_value}"
    if error.validator == "type" and isinstance(error.instance, str) and \
            "string" not in error.validator_value and _numeric(error.instance):
        return (f"{where}: {error.message} (snakemake --config passes the values inside a "
                "nested key={...} as text: set them in a --configfile)")
    return f"{where}: {error.message}"


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def validate(config: dict, schema: dict | None = None) -> dict:
    """Check ``config`` against the schema in place, filling defaults; raise ConfigError."""
    errors = sorted(_Validator(schema or load_schema()).iter_errors(config),
                    key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"invalid config: {_message(best)}")
    return config


def _yaml_error(path, exc: yaml.MarkedYAMLError) -> str:
    """A YAML error as one line naming the file and the line."""
    line = f"{path} line {exc.problem_mark.line + 1}" if exc.problem_mark else str(path)
    tag = re.match(r"could not determine a constructor for the tag '(.*)'$", exc.problem or "")
    if tag:
        name = tag[1].replace("tag:yaml.org,2002:", "!!")
        return (f"{line}: YAML tag {name!r} is refused (vfer reads configs with safe_load; a "
                "config file is data, not code)")
    context = f" ({exc.context})" if exc.context else ""
    return f"{line}: invalid YAML: {exc.problem}{context}"


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML config file read as data (``safe_load``): a ``!!python`` tag is refused; every
    problem is one line naming the file (and the line)."""
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror}") from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_yaml_error(path, exc)) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a config: it holds a {type(data).__name__}, not a "
                          "mapping of settings")
    return data


# --- the plan ----------------------------------------------------------------------------

def method_key(method: str, params: dict) -> str:
    """Output folder name for a method and its parameters: switching back finds the cache."""
    return f"{method}-{sha256_of(params)[:10]}"


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and \
            isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


@dataclass
class Plan:
    """What the workflow runs, resolved from a validated config (all plain data)."""

    flows: dict[str, dict] = field(default_factory=dict)  # flow key -> flow params
    dynamics: dict[str, dict] = field(default_factory=dict)  # "<source>/<key>" -> params
    models: dict[str, dict] = field(default_factory=dict)  # stream or network -> model
    experiments: dict[str, dict] = field(default_factory=dict)


def _flow_params(config: dict, variant: str, where: str) -> dict:
    flow = config["flow"]
    if variant == "default":
        chosen = {k: v for k, v in flow.items() if k != "variants"}
    elif variant in flow["variants"]:
        chosen = _merge({k: v for k, v in flow.items() if k != "variants"},
                        flow["variants"][variant])
    else:
        raise ConfigError(f"{where}.flow: unknown flow variant {variant!r}; define it under "
                          f"flow.variants (known: {['default', *flow['variants']]})")
    return {"method": chosen["method"], "params": chosen[chosen["method"]],
            "bound": chosen["bound"], "consecutive": chosen["consecutive"],
            "store_raw": chosen["store_raw"]}


def _source(config: dict, plan: Plan, kind: str, branch: dict, where: str) -> dict:
    """Which stage files an input reads: {"input", "flow": key, "dynamic": "<src>/<key>"}."""
    source = {"input": kind, "flow": None, "dynamic": None}
    if kind in ("flow", "dynamic_flow"):
        params = _flow_params(config, branch["flow"], where)
        source["flow"] = method_key(params["method"], params)
        plan.flows[source["flow"]] = params
    elif branch.get("flow", "default") != "default":
        raise ConfigError(f"{where}.flow: input {kind} does not use flow")
    if kind.startswith("dynamic_"):
        src = kind.split("_")[1]
        name = branch.get("dynamic")
        if name is None:
            params = dict(config["dynamic"][src])
        elif name in config["dynamic"]["variants"]:
            variant = dict(config["dynamic"]["variants"][name])
            if variant.pop("source") != src:
                raise ConfigError(f"{where}.dynamic: variant {name!r} pools "
                                  f"{config['dynamic']['variants'][name]['source']}, not {src} "
                                  f"(input {kind})")
            params = _merge(config["dynamic"][src], variant)
        else:
            raise ConfigError(f"{where}.dynamic: unknown dynamic variant {name!r} (known: "
                              f"{sorted(config['dynamic']['variants'])})")
        if src == "flow":
            if params["window"] and not plan.flows[source["flow"]]["consecutive"]:
                raise ConfigError(f"{where}: dynamic windows over flows need every consecutive "
                                  f"pair: set consecutive: true on flow variant "
                                  f"{branch['flow']!r}")
            params["flow_key"] = source["flow"]
        source["dynamic"] = f"{src}/{method_key(params['method'], params)}"
        plan.dynamics[source["dynamic"]] = params
    elif branch.get("dynamic") is not None:
        raise ConfigError(f"{where}.dynamic: input {kind} does not use dynamic images")
    return source


def _steps(kind: str, config: dict) -> int:
    steps, length = INPUTS.meta(kind)["steps"], config["segments"]["length"]
    return {"length": length, "length-1": length - 1}.get(steps, steps)


def _options(registry, name: str, given: dict, where: str) -> dict:
    allowed = registry.meta(name)["options"]
    for key in given:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: {registry.kind} {name} has no option {key!r} "
                              f"(it takes {list(allowed) or 'none'})")
    return dict(given)


def _taps(backbone: str, layer, where: str) -> list[str]:
    meta = BACKBONES.meta(backbone)
    taps = [meta["default_tap"]] if layer is None else [layer] if isinstance(layer, str) \
        else list(layer)
    for tap in taps:
        if tap not in meta["taps"]:
            raise ConfigError(f"{where}.layer: {backbone} has taps {list(meta['taps'])}, "
                              f"not {tap!r}")
    if not taps:
        raise ConfigError(f"{where}.layer: name at least one tap")
    return taps


def _temporal(spec: dict | None, where: str) -> dict | None:
    if spec is None:
        return None
    options = {k: v for k, v in spec.items() if k != "kind"}
    return {"kind": spec["kind"], **_options(TEMPORAL, spec["kind"], options, where)}


def _branch(config: dict, name: str, b: dict, consumer: str, where: str) -> dict:
    """A network branch spec from a stream or a network input."""
    kind, backbone = b["input"], b["backbone"]
    meta = BACKBONES.meta(backbone)
    vector = INPUTS.meta(kind)["vector"] is not None
    if vector and backbone not in ("mlp", "identity"):
        raise ConfigError(f"{where}.backbone: input {kind} is a vector per frame: use mlp or "
                          f"identity, not {backbone}")
    if not vector and backbone == "mlp":
        raise ConfigError(f"{where}.backbone: mlp takes vector inputs (landmarks), not {kind}")
    if meta.get("clip") and _steps(kind, config) < 2:
        raise ConfigError(f"{where}.backbone: {backbone} convolves over time; input {kind} has "
                          "one image per segment")
    taps = _taps(backbone, b["layer"], where)
    temporal = _temporal(b.get("temporal"), f"{where}.temporal")
    takes = TEMPORAL.meta(temporal["kind"] if temporal else consumer)["accepts"]
    maps = [t for t in taps if meta["taps"][t] == "map"
            or (meta["taps"][t] == "same" and not vector)]
    pool = b.get("pool", "auto")
    if not maps and pool not in ("auto", "none"):
        raise ConfigError(f"{where}.pool: {pool} pools maps, and tap(s) {taps} of {backbone} give "
                          "vectors")
    if pool == "auto":
        pool = "none" if not maps or takes == "map" else "avg"
    if maps and pool == "none" and takes != "map":
        raise ConfigError(f"{where}: tap(s) {maps} give maps, which "
                          f"{temporal['kind'] if temporal else consumer} cannot take: set pool "
                          "(avg, max or mspp)")
    size = None if vector else (b["size"] or meta["input_size"] or config["faces"]["size"][0])
    return {"name": name, "input": kind, "steps": _steps(kind, config),
            "channels": INPUTS.meta(kind)["vector"] or 3, "size": size, "backbone": backbone,
            "backbone_options": _options(BACKBONES, backbone, b["backbone_options"],
                                         f"{where}.backbone_options"),
            "share": b.get("share"), "taps": taps, "pool": pool, "temporal": temporal,
            "activation": b.get("activation", "none"), "project": b.get("project")}


TRAINING_KEYS = ("finetune", "steps", "batch_size", "sample_steps", "optimizer", "lr", "momentum",
                 "weight_decay", "label_smoothing", "schedule", "step_size", "gamma", "init", "val_fraction",
                 "eval_every", "patience", "augment", "cache_mb")


def _training(config: dict, s: dict, branches: list[dict], where: str) -> dict:
    train = {k: copy.deepcopy(s[k]) for k in TRAINING_KEYS}
    train["seed"] = config["seed"]
    clip = any(BACKBONES.meta(b["backbone"]).get("clip") for b in branches)
    if clip and train["sample_steps"] is not None:
        raise ConfigError(f"{where}.sample_steps: a 3D backbone convolves over the whole segment "
                          "(set sample_steps: null)")
    vectors = [bool(INPUTS.meta(b["input"])["vector"]) for b in branches]
    if train["augment"]["flip"] and any(vectors):
        raise ConfigError(f"{where}.augment.flip: flips of landmark inputs are not supported "
                          "(set augment: {flip: false})")
    moved = train["augment"]["rotate"] > 0 or train["augment"]["crop"] < 1
    if moved and any(vectors) and not all(vectors):
        raise ConfigError(f"{where}.augment: rotations and crops would move this network's "
                          "images but not its landmarks (set augment: {flip: false, rotate: 0, "
                          "crop: 1})")
    return train


TORCHVISION_URL = "https://download.pytorch.org/models/"


def torchvision_weights(backbone: str, where: str) -> str:
    """The standard torchvision weights file of ``backbone`` in torch's hub cache
    ($TORCH_HOME/hub/checkpoints, TORCH_HOME defaulting to $XDG_CACHE_HOME/torch or
    ~/.cache/torch); ConfigError with the file and the command that fetches it if missing."""
    name = BACKBONES.meta(backbone).get("torchvision_file")
    if not name:
        raise ConfigError(f"{where}.weights: torchvision has no weights for {backbone}")
    cache = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    home = os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))
    path = os.path.join(home, "hub", "checkpoints", name)
    if not os.path.isfile(path):
        raise ConfigError(
            f"{where}.weights: torchvision's {name} is not in {os.path.dirname(path)}; on a "
            "machine with internet, fetch it with: python -c \"import torch; "
            f"torch.hub.load_state_dict_from_url('{TORCHVISION_URL}{name}')\" (then copy it "
            "there, or set TORCH_HOME)")
    return path


def _weights(branch: dict, path: str | None, where: str) -> str | None:
    """The initial weights file of a branch: a path, ``torchvision`` (the standard file in
    torch's hub cache), or None (random initialisation)."""
    width = branch["backbone_options"].get("width", 1)
    if path and width != 1:
        raise ConfigError(f"{where}.weights: {branch['backbone']} at width {width} has none of "
                          f"the shapes of {path} (a full-width file); set weights: null, or "
                          "width 1 (a -small preset loaded before its full one does this)")
    if path == "torchvision":
        return torchvision_weights(branch["backbone"], where)
    if path and not os.path.isfile(path):
        raise ConfigError(f"{where}.weights: weights file not found: {path}")
    if path and BACKBONES.meta(branch["backbone"]).get("head") is None:
        raise ConfigError(f"{where}.weights: {branch['backbone']} has no weights to load")
    return path


def _stream_model(config: dict, plan: Plan, name: str, s: dict) -> dict:
    where = f"streams.{name}"
    if s["backbone"] in DESCRIPTORS:
        needs = DESCRIPTORS.meta(s["backbone"])["input"]
        if s["input"] != needs or s["finetune"] != "none":
            raise ConfigError(f"{where}: backbone {s['backbone']} needs input: {needs} and "
                              "finetune: none")
        unused = [k for k in ("layer", "size", "weights") if s[k] is not None]
        unused += ["backbone_options"] if s["backbone_options"] else []
        if unused:
            raise ConfigError(f"{where}.{unused[0]}: the descriptor {s['backbone']} has no "
                              f"layers, size or weights; it would ignore {unused}")
        return {"name": name, "kind": "descriptor", "descriptor": s["backbone"],
                "diff": s["diff"], "finetune": "none",
                "sources": {"main": _source(config, plan, s["input"], s, where)}}
    branch = _branch(config, name, s, "mean", where)
    meta = BACKBONES.meta(s["backbone"])
    vector_tap = len(branch["taps"]) == 1 and meta["taps"][branch["taps"][0]] == "vector"
    head = {"kind": "backbone"} if meta["head"] and vector_tap \
        else {"kind": "mlp", "hidden": [], "dropout": 0.0}
    network = {"name": name, "branches": [branch], "fusion": {"kind": "concat", "gating": None},
               "temporal": {"kind": "mean"}, "head": head, "features": "pooled"}
    train = _training(config, s, [branch], where)
    if train["sample_steps"] is None and not meta.get("clip"):
        train["sample_steps"] = 1  # a stream trains on single images, as the seeds do
    return {"name": name, "kind": "network", "network": network, "train": train,
            "finetune": s["finetune"], "sources": {name: _source(config, plan, s["input"], s,
                                                                   where)},
            "weights": {name: _weights(branch, s["weights"], where)}}


def _network_model(config: dict, plan: Plan, name: str, n: dict) -> dict:
    where = f"networks.{name}"
    temporal = _temporal(n["temporal"], f"{where}.temporal") or {"kind": "mean"}
    fusion = n["fusion"]
    if (fusion["kind"] is None) != (TEMPORAL.meta(temporal["kind"])["accepts"] == "taps"):
        raise ConfigError(f"{where}.fusion.kind: null (every tap to the temporal model) goes "
                          f"with a temporal model that takes taps (nested_lstm), not "
                          f"{temporal['kind']}")
    branches, sources, weights = [], {}, {}
    for bname, b in n["inputs"].items():
        bwhere = f"{where}.inputs.{bname}"
        branch = _branch(config, bname, b, temporal["kind"], bwhere)
        if branch["share"] is not None:
            earlier = {x["name"]: x for x in branches}
            if branch["share"] not in earlier:
                raise ConfigError(f"{bwhere}.share: {branch['share']!r} is not an earlier input "
                                  f"of {name}")
            other = earlier[branch["share"]]
            if (other["backbone"], other["backbone_options"], other["size"]) != \
                    (branch["backbone"], branch["backbone_options"], branch["size"]):
                raise ConfigError(f"{bwhere}.share: sharing needs the same backbone, options "
                                  f"and size as {branch['share']!r}")
            owner = n["inputs"][branch["share"]]["weights"]
            if b["weights"] not in (None, owner):
                raise ConfigError(f"{bwhere}.weights: this input shares the backbone of "
                                  f"{branch['share']!r}, which starts from that input's weights "
                                  f"({owner or 'random initialisation'}); set them there")
        branches.append(branch)
        sources[bname] = _source(config, plan, b["input"], b, bwhere)
        weights[bname] = _weights(branch, b["weights"], bwhere)
    gating = fusion["gating"]
    if gating is not None:
        _check_gating(gating, {b["name"]: b for b in branches}, f"{where}.fusion.gating")
    head = {"kind": n["head"]["kind"], "hidden": list(n["head"]["hidden"]),
            "dropout": n["head"]["dropout"]}
    if head["kind"] == "backbone":
        b = branches[0]
        meta = BACKBONES.meta(b["backbone"])
        if len(branches) != 1 or len(b["taps"]) != 1 or meta["taps"][b["taps"][0]] != "vector" \
                or not meta["head"]:
            raise ConfigError(f"{where}.head.kind: backbone needs one input whose backbone has "
                              "its own head, tapped at one vector layer")
        head = {"kind": "backbone"}
    network = {"name": name, "branches": branches,
               "fusion": {"kind": fusion["kind"], "gating": gating}, "temporal": temporal,
               "head": head, "features": n["features"]}
    if n["finetune"] == "none":
        _check_untrained(network, f"{where}.finetune")
    return {"name": name, "kind": "network", "network": network,
            "train": _training(config, n, branches, where), "finetune": n["finetune"],
            "sources": sources, "weights": weights}


def _check_untrained(network: dict, where: str) -> None:
    """``finetune: none`` writes features of a network that is never trained: refuse one whose
    features pass through layers that only training would set."""
    untrained = [f"{b['name']}'s {b['backbone']} squeeze-excitation layers (no ImageNet file "
                 "holds them)" for b in network["branches"]
                 if BACKBONES.meta(b["backbone"]).get("optional_weights")]
    for b in network["branches"]:
        if b["temporal"] and TEMPORAL.meta(b["temporal"]["kind"])["learned"]:
            untrained.append(f"{b['name']}'s temporal model {b['temporal']['kind']}")
        if b["project"]:
            untrained.append(f"{b['name']}'s projection")
    if TEMPORAL.meta(network["temporal"]["kind"])["learned"]:
        untrained.append(f"the temporal model {network['temporal']['kind']}")
    fusion = network["fusion"]["kind"]
    if fusion and FUSIONS.meta(fusion)["learned"]:
        untrained.append(f"{fusion}'s weights")
    if network["features"] == "penultimate" and network["head"].get("hidden"):
        untrained.append("the head's hidden layers (features: penultimate)")
    if untrained:
        raise ConfigError(f"{where}: none writes the features of a network that is never "
                          f"trained, but they pass through {', '.join(untrained)}, which start "
                          "at random; train it (finetune: per_fold) or leave them out")


def _check_gating(gating: dict, branches: dict, where: str) -> None:
    for end in ("from", "to"):
        if gating[end] not in branches:
            raise ConfigError(f"{where}.{end}: {gating[end]!r} is not an input of this network")
    if gating["from"] == gating["to"]:
        raise ConfigError(f"{where}: a branch cannot gate itself")
    a, b = branches[gating["from"]], branches[gating["to"]]
    blocks = BACKBONES.meta(a["backbone"]).get("blocks")
    if not blocks or (a["backbone"], a["backbone_options"], a["size"]) != \
            (b["backbone"], b["backbone_options"], b["size"]):
        raise ConfigError(f"{where}: gating needs both branches on the same residual backbone "
                          "(resnet*, se_resnet*) with the same options and size")
    if not (a["steps"] == b["steps"] or 1 in (a["steps"], b["steps"])):
        raise ConfigError(f"{where}: {gating['from']!r} has {a['steps']} steps and "
                          f"{gating['to']!r} {b['steps']}: a gater needs the same steps as the "
                          "branch it gates, or one step (e.g. frames with the segment's dynamic "
                          "image, not with its flows)")
    for block in gating["at"]:
        stage, index = block.split(".")
        if int(index) >= blocks[stage]:
            raise ConfigError(f"{where}.at: {a['backbone']} has {blocks[stage]} blocks in "
                              f"{stage}, so no {block!r}")


def _experiment(config: dict, plan: Plan, e: dict, where: str) -> dict:
    classifier = _merge(config["classifier"], e.get("classifier") or {})
    for s in e["streams"]:
        if s not in plan.models:
            raise ConfigError(f"{where}.streams: {s!r} is neither a stream nor a network "
                              f"(known: {sorted(plan.models)})")
    if classifier["kind"] == "softmax":
        for s in e["streams"]:
            m = plan.models[s]
            if m["kind"] != "network" or m["finetune"] != "per_fold":
                raise ConfigError(f"{where}.classifier.kind: softmax uses a network trained per "
                                  f"fold; {s!r} is not one")
        if len(e["streams"]) > 1 and e["fusion"] != "scores":
            raise ConfigError(f"{where}.fusion: softmax scores of several networks are combined "
                              "by fusion: scores")
        if e["weights"] != "mean":
            raise ConfigError(f"{where}.weights: {e['weights']} needs scores of models fitted "
                              "on part of the training subjects; softmax experiments use mean")
    if e["fusion"] == "scores" and e["select"]:
        raise ConfigError(f"{where}.select: chooses the streams of a feature fusion; score "
                          "fusion weighs its streams (weights: learned or stacking)")
    if e["fusion"] != "scores" and e["weights"] != "mean":
        raise ConfigError(f"{where}.weights: {e['weights']} weighs the streams of score fusion "
                          f"(fusion: scores), not of fusion: {e['fusion']}")
    return {"name": e["name"], "streams": list(e["streams"]), "fusion": e["fusion"],
            "weights": e["weights"], "standardise": e["standardise"],
            "normalise": _normalise(e, where), "balance": e["balance"], "select": e["select"],
            "classifier": classifier, "reported": [dict(r) for r in e["reported"]]}


def _normalise(e: dict, where: str) -> list[str]:
    """The normalisation of each of the experiment's streams, in their order."""
    given = e["normalise"]
    if isinstance(given, str):
        return [given] * len(e["streams"])
    unknown = sorted(set(given) - set(e["streams"]))
    if unknown:
        raise ConfigError(f"{where}.normalise: {unknown[0]!r} is not a stream of this experiment "
                          f"(its streams: {e['streams']})")
    return [given.get(s, "none") for s in e["streams"]]


def resolve(config: dict) -> Plan:
    """The plan of a validated config; raise ConfigError naming the key on any inconsistency."""
    plan = Plan()
    protocol = config["protocol"]
    if protocol["repeats"] > 1 and protocol["name"] != "kfold":
        raise ConfigError(f"protocol.repeats: protocol {protocol['name']} has one partition; "
                          "repeats apply to kfold")
    clash = sorted(set(config["streams"]) & set(config["networks"]))
    if clash:
        raise ConfigError(f"networks.{clash[0]}: the name is also a stream; names must differ")
    used = {s for e in config["experiments"] for s in e["streams"]}
    for name in sorted(used):
        if name in config["streams"]:
            plan.models[name] = _stream_model(config, plan, name, config["streams"][name])
        elif name in config["networks"]:
            plan.models[name] = _network_model(config, plan, name, config["networks"][name])
    seen = set()
    for i, e in enumerate(config["experiments"]):
        where = f"experiments[{i}]"
        if e["name"] in seen:
            raise ConfigError(f"{where}.name: experiment {e['name']!r} is defined twice")
        seen.add(e["name"])
        plan.experiments[e["name"]] = _experiment(config, plan, e, where)
    return plan


def load(config: dict, schema: dict | None = None) -> Plan:
    """Validate (filling defaults in place) and resolve a config."""
    validate(config, schema)
    return resolve(config)
