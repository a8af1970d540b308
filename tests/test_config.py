"""The config: strict schema, defaults, registries as the schema's choices, the plan."""

from __future__ import annotations

import copy
import importlib

import pytest
import yaml

from tests.conftest import REPO
from vfer import config as cfg
from vfer.nets import registry
from vfer.nets.registry import (BACKBONES, DESCRIPTORS, FUSIONS, HEADS, INITS, INPUTS,
                                OPTIMIZERS, SCHEDULES, TEMPORAL)

SCHEMA = cfg.load_schema()
DEMO = yaml.safe_load((REPO / "config/config.yaml").read_text())
NEXT = len(DEMO["experiments"])  # the index of an experiment appended to the demo's


def props(*path):
    node = SCHEMA
    for key in path:
        node = node[key]
    return node


def test_the_schema_choices_are_the_registries_keys():
    network = props("properties", "networks", "additionalProperties", "properties")
    branch = network["inputs"]["additionalProperties"]["properties"]
    stream = props("properties", "streams", "additionalProperties", "properties")
    training = props("$defs", "training", "properties")
    assert branch["backbone"]["enum"] == list(BACKBONES.names())
    assert stream["backbone"]["enum"] == list(BACKBONES.names()) + list(DESCRIPTORS.names())
    assert branch["input"]["enum"] == stream["input"]["enum"] == list(INPUTS.names())
    assert props("$defs", "temporal", "properties", "kind")["enum"] == list(TEMPORAL.names())
    assert network["fusion"]["properties"]["kind"]["enum"] == list(FUSIONS.names()) + [None]
    assert network["head"]["properties"]["kind"]["enum"] == list(HEADS.names())
    assert training["optimizer"]["enum"] == list(OPTIMIZERS.names())
    assert training["schedule"]["enum"] == list(SCHEDULES.names())
    assert training["init"]["enum"] == list(INITS.names())
    options = set(branch["backbone_options"]["properties"])
    assert options == {o for n in BACKBONES for o in BACKBONES.meta(n)["options"]}
    temporal_options = set(props("$defs", "temporal", "properties")) - {"kind"}
    assert temporal_options == {o for n in TEMPORAL for o in TEMPORAL.meta(n)["options"]}


@pytest.mark.parametrize("reg", [BACKBONES, TEMPORAL, FUSIONS, HEADS, OPTIMIZERS, SCHEDULES,
                                 INITS, INPUTS, DESCRIPTORS])
def test_every_registered_target_exists(reg):
    for name in reg:
        module, attr = reg.entry(name).target.split(":")
        assert hasattr(importlib.import_module(module), attr), (reg.kind, name)


def test_the_registry_and_the_config_do_not_import_torch():
    import ast

    for module in ("vfer/nets/registry.py", "vfer/config.py", "vfer/nets/__init__.py"):
        tree = ast.parse((REPO / module).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree)
                    if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & {"torch", "mediapipe", "tensorflow"}, module
    assert registry.BACKBONES.meta("alexnet")["input_size"] == 227


def config(**changes) -> dict:
    c = copy.deepcopy(DEMO)
    c.update(copy.deepcopy(changes))
    return c


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(segmnets={}), r"unknown key 'segmnets' \(did you mean 'segments'\?\)"),
    (lambda c: c["streams"]["spatial"].update(finetun="none"),
     r"unknown key 'streams.spatial.finetun' \(did you mean 'finetune'\?\)"),
    (lambda c: c["streams"]["spatial"].update(stepz=3),
     r"unknown key 'streams.spatial.stepz' \(did you mean 'steps'\?\)"),
    (lambda c: c["networks"]["rgb_flow_lstm"]["inputs"]["rgb"].update(wieghts=None),
     r"unknown key 'networks.rgb_flow_lstm.inputs.rgb.wieghts' \(did you mean 'weights'\?\)"),
    (lambda c: c["flow"]["farneback"].update(levels=-1), r"flow.farneback.levels: -1 is less"),
    (lambda c: c["segments"].update(length=16.0), r"segments.length: 16.0 is not of type "
                                                  r"'integer'"),
    (lambda c: c.update(seed=-1), r"seed: -1 is less than the minimum of 0"),
    (lambda c: c.update(protocol={"name": "kfold", "folds": "2"}),
     r"protocol.folds: '2' is not of type 'integer' \(snakemake --config passes the values "
     r"inside a nested key=\{...\} as text: set them in a --configfile\)"),
    (lambda c: c["flow"]["farneback"].update(winsize=0), r"flow.farneback.winsize: 0 is less"),
    (lambda c: c["flow"]["farneback"].update(poly_n=2), r"flow.farneback.poly_n: 2 is not one of"),
    (lambda c: c["classifier"].update(gamma=["foo"]), r"classifier.gamma\[0\]: 'foo'"),
    (lambda c: c["networks"]["rgb_flow_lstm"]["temporal"].update(kind="gru"),
     r"networks.rgb_flow_lstm.temporal.kind: 'gru' is not one of \['mean', 'max', 'lstm'"),
    (lambda c: c["flow"]["variants"]["hs"].update(methd="tvl1"),
     r"unknown key 'flow.variants.hs.methd' \(did you mean 'method'\?\)"),
])
def test_bad_keys_and_values_are_refused_with_their_path(edit, message):
    c = config()
    edit(c)
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load(c, SCHEMA)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["experiments"].append({"name": "spatial", "streams": ["temporal"]}),
     rf"experiments\[{NEXT}\].name: experiment 'spatial' is defined twice"),
    (lambda c: c["experiments"].append({"name": "x", "streams": ["nope"]}),
     rf"experiments\[{NEXT}\].streams: 'nope' is neither a stream nor a network"),
    (lambda c: c["streams"]["spatial"].update(layer="fc7"),
     r"streams.spatial.layer: small_cnn has taps \['conv', 'fc'\], not 'fc7'"),
    (lambda c: c["streams"]["temporal"].update(flow="tvl1"),
     r"streams.temporal.flow: unknown flow variant 'tvl1'"),
    (lambda c: c["streams"]["spatial"].update(backbone_options={"kernels": [5, 3], "width": 2}),
     r"streams.spatial.backbone_options.width: backbone small_cnn has no option 'width'"),
    (lambda c: c["networks"]["rgb_flow_lstm"]["temporal"].update(channels=[4]),
     r"networks.rgb_flow_lstm.temporal.channels: temporal model lstm has no option 'channels'"),
    (lambda c: c["experiments"].append({"name": "s", "streams": ["landmarks"],
                                        "classifier": {"kind": "softmax"}}),
     r"softmax uses a network trained per fold; 'landmarks' is not one"),
    (lambda c: c["experiments"].append({"name": "s", "streams": ["spatial", "rgb_flow_lstm"],
                                        "classifier": {"kind": "softmax"}}),
     rf"experiments\[{NEXT}\].fusion: softmax scores of several networks are combined by "
     r"fusion: scores"),
    (lambda c: c["streams"]["handcrafted"].update(weights="torchvision"),
     r"streams.handcrafted.weights: the descriptor hog has no layers, size or weights; it would "
     r"ignore \['weights'\]"),
    (lambda c: c["networks"]["rgb_flow_lstm"]["inputs"]["rgb"].update(layer="fc", pool="mspp"),
     r"networks.rgb_flow_lstm.inputs.rgb.pool: mspp pools maps, and tap\(s\) \['fc'\] of "
     r"small_cnn give vectors"),
    (lambda c: c["streams"]["handcrafted"].update(input="flow"),
     r"streams.handcrafted: backbone hog needs input: frames and finetune: none"),
    (lambda c: c["networks"]["rgb_flow_lstm"]["inputs"]["rgb"].update(share="flow"),
     r"inputs.rgb.share: 'flow' is not an earlier input of rgb_flow_lstm"),
    (lambda c: c["networks"]["rgb_flow_lstm"].update(
        fusion={"kind": "sum", "gating": {"from": "flow", "to": "rgb", "at": ["layer3.0"]}}),
     r"gating needs both branches on the same residual backbone"),
    (lambda c: c["networks"]["rgb_flow_lstm"].update(
        inputs={"rgb": {"input": "frames", "backbone": "resnet18", "size": 32},
                "flow": {"input": "flow", "backbone": "resnet18", "size": 32}},
        fusion={"kind": "sum", "gating": {"from": "flow", "to": "rgb", "at": ["layer3.0"]}}),
     r"rgb_flow_lstm.fusion.gating: 'flow' has 15 steps and 'rgb' 16: a gater needs the same "
     r"steps"),
    (lambda c: c["streams"]["spatial"].update(backbone="alexnet", weights="torchvision",
                                              backbone_options={"width": 0.125}),
     r"streams.spatial.weights: alexnet at width 0.125 has none of the shapes of torchvision"),
    (lambda c: c["networks"]["rgb_flow_lstm"].update(finetune="none"),
     r"networks.rgb_flow_lstm.finetune: none writes the features of a network that is never "
     r"trained, but they pass through the temporal model lstm, the head's hidden layers "
     r"\(features: penultimate\), which start at random"),
    (lambda c: c["networks"]["rgb_flow_lstm"]["inputs"].update(
        flow={"input": "frames", "backbone": "small_cnn", "size": 32, "share": "rgb",
              "weights": "other.pth"}),
     r"inputs.flow.weights: this input shares the backbone of 'rgb', which starts from that "
     r"input's weights \(random initialisation\); set them there"),
    (lambda c: c["experiments"].append({"name": "n", "streams": ["spatial", "temporal"],
                                        "normalise": {"dynamic": "l2"}}),
     rf"experiments\[{NEXT}\].normalise: 'dynamic' is not a stream of this experiment"),
    (lambda c: c["experiments"].append({"name": "n", "streams": ["spatial", "temporal"],
                                        "fusion": "scores", "select": True}),
     rf"experiments\[{NEXT}\].select: chooses the streams of a feature fusion"),
    (lambda c: c["experiments"].append({"name": "n", "streams": ["spatial", "temporal"],
                                        "weights": "stacking"}),
     rf"experiments\[{NEXT}\].weights: stacking weighs the streams of score fusion"),
    (lambda c: c["experiments"].append({"name": "n", "streams": ["rgb_flow_lstm"],
                                        "fusion": "scores", "weights": "stacking",
                                        "classifier": {"kind": "softmax"}}),
     r"weights: stacking needs scores of models fitted on part of the training subjects"),
    (lambda c: c.update(protocol={"name": "losgo", "repeats": 4}),
     r"protocol.repeats: protocol losgo has one partition; repeats apply to kfold"),
    (lambda c: c["networks"]["rgb_flow_lstm"]["inputs"].update(
        flow={"input": "landmarks", "backbone": "mlp"}) or
        c["networks"]["rgb_flow_lstm"].update(augment={"flip": False}),
     r"networks.rgb_flow_lstm.augment: rotations and crops would move this network's images "
     r"but not its landmarks"),
])
def test_cross_field_mistakes_are_refused_with_their_path(edit, message):
    c = config()
    edit(c)
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load(c, SCHEMA)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["experiments"].append({"name": "n", "streams": ["spatial"], "normalise": "l1"}),
     r"experiments\[\d+\].normalise: 'l1' is not one of \['none', 'l2', 'tanh'\]"),
    (lambda c: c["experiments"].append({"name": "n", "streams": ["spatial"],
                                        "normalise": {"spatial": "l3"}}),
     r"experiments\[\d+\].normalise.spatial: 'l3' is not one of"),
    (lambda c: c["experiments"].append({"name": "n", "streams": ["spatial"],
                                        "standardise": "no"}),
     r"experiments\[\d+\].standardise: 'no' is not of type 'boolean'"),
    (lambda c: c["protocol"].update(repeats=0), r"protocol.repeats: 0 is less than"),
    (lambda c: c["streams"]["spatial"].update(label_smoothing=1.0),
     r"streams.spatial.label_smoothing: 1.0 is greater than or equal to"),
])
def test_bad_evaluation_keys_are_refused_with_their_path(edit, message):
    c = config()
    edit(c)
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load(c, SCHEMA)


def test_experiment_keys_resolve_per_stream_with_their_defaults():
    c = config(experiments=[
        {"name": "one", "streams": ["spatial", "temporal"], "normalise": "tanh"},
        {"name": "some", "streams": ["spatial", "temporal", "dynamic"],
         "normalise": {"temporal": "l2"}, "fusion": "sum", "standardise": False},
        {"name": "stack", "streams": ["spatial", "temporal"], "fusion": "scores",
         "weights": "stacking"}],
        protocol={"name": "kfold", "folds": 5, "repeats": 3})
    plan = cfg.load(c, SCHEMA)
    one, some, stack = (plan.experiments[n] for n in ("one", "some", "stack"))
    assert one["normalise"] == ["tanh", "tanh"] and some["normalise"] == ["none", "l2", "none"]
    assert (one["standardise"], one["balance"], one["select"]) == (True, True, False)
    assert some["standardise"] is False and stack["weights"] == "stacking"
    assert c["protocol"]["repeats"] == 3
    assert plan.models["spatial"]["train"]["label_smoothing"] == \
        DEMO["streams"]["spatial"].get("label_smoothing", 0.0)


def test_defaults_fill_gaps_and_variants_inherit_from_the_default_flow():
    c = config()
    plan = cfg.load(c, SCHEMA)
    assert c["faces"]["detector"] == "mediapipe" and c["protocol"]["folds"] == 10
    flows = {p["method"]: p for p in plan.flows.values()}
    assert set(flows) == {"farneback", "horn_schunck"}
    assert flows["horn_schunck"]["bound"] == 2  # from the default flow, not the schema's 20
    assert flows["horn_schunck"]["params"]["alpha"] == 0.03
    keys = {m: plan.models[m]["sources"][m]["flow"] for m in ("temporal", "temporal_hs")}
    assert keys["temporal"].startswith("farneback-") and keys["temporal_hs"].startswith(
        "horn_schunck-")


def test_a_stream_is_a_one_input_network_that_trains_on_single_images():
    plan = cfg.load(config(), SCHEMA)
    spatial = plan.models["spatial"]
    assert spatial["kind"] == "network" and spatial["train"]["sample_steps"] == 1
    net = spatial["network"]
    assert [b["taps"] for b in net["branches"]] == [["fc"]]
    assert net["temporal"] == {"kind": "mean"} and net["head"] == {"kind": "backbone"}
    assert net["features"] == "pooled"
    lstm = plan.models["rgb_flow_lstm"]
    assert [(b["name"], b["steps"]) for b in lstm["network"]["branches"]] == [("rgb", 16),
                                                                              ("flow", 15)]
    assert lstm["train"]["sample_steps"] is None
    assert plan.experiments["rgb_flow_lstm"]["classifier"]["kind"] == "softmax"
    assert plan.experiments["rgb_flow_lstm"]["classifier"]["C"] == DEMO["classifier"]["C"]


def test_dynamic_variants_name_their_source_and_windows_need_consecutive_flows():
    c = config()
    c["dynamic"]["variants"] = {"ordered": {"source": "flow", "window": 28,
                                            "method": "rank_svm"}}
    c["streams"]["ordered"] = {"input": "dynamic_flow", "dynamic": "ordered",
                               "backbone": "small_cnn"}
    c["experiments"].append({"name": "ordered", "streams": ["ordered"]})
    with pytest.raises(cfg.ConfigError, match="set consecutive: true on flow variant 'default'"):
        cfg.load(copy.deepcopy(c), SCHEMA)
    c["flow"]["consecutive"] = True
    plan = cfg.load(c, SCHEMA)
    source = plan.models["ordered"]["sources"]["ordered"]
    params = plan.dynamics[source["dynamic"]]
    assert source["dynamic"].startswith("flow/rank_svm-")
    assert params["window"] == 28 and params["flow_key"] == source["flow"]
    c["streams"]["ordered"]["input"] = "dynamic_rgb"
    with pytest.raises(cfg.ConfigError, match="variant 'ordered' pools flow, not rgb"):
        cfg.load(c, SCHEMA)


def test_python_tags_in_yaml_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("samples: !!python/object/apply:os.system ['touch marker']\n")
    with pytest.raises(cfg.ConfigError, match=r"evil.yaml line 1: YAML tag .*python.* is refused"):
        cfg.read_yaml(path)
    assert not (tmp_path / "marker").exists()


def test_torchvision_weights_are_found_in_the_hub_cache_or_named_with_their_command(
        tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    c = config()
    c["streams"]["spatial"].update(backbone="alexnet", weights="torchvision", size=None)
    with pytest.raises(cfg.ConfigError, match=r"streams.spatial.weights: torchvision's "
                       r"alexnet-owt-7be5be79.pth is not in .*hub/checkpoints; .*"
                       r"load_state_dict_from_url\('https://download.pytorch.org/models/"
                       r"alexnet-owt-7be5be79.pth'\)"):
        cfg.load(copy.deepcopy(c), SCHEMA)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "alexnet-owt-7be5be79.pth").write_bytes(b"x")
    plan = cfg.load(c, SCHEMA)
    assert plan.models["spatial"]["weights"]["spatial"] == str(
        checkpoints / "alexnet-owt-7be5be79.pth")
    c["streams"]["spatial"].update(backbone="small_cnn")
    with pytest.raises(cfg.ConfigError, match="torchvision has no weights for small_cnn"):
        cfg.load(c, SCHEMA)


def test_the_config_reference_is_written_from_the_schema():
    """docs/config.md is what `python -m vfer.config_doc` writes from the schema now."""
    from vfer.config_doc import reference

    assert (REPO / "docs/config.md").read_text() == reference(), \
        "docs/config.md is stale: python -m vfer.config_doc > docs/config.md"
