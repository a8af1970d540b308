# Samples table, shards, folds and the helpers every rule uses. Everything here is computed
# once at parse time from the config and the samples table.
import os

from snakemake.exceptions import WorkflowError

from vfer.features import DESCRIPTORS
from vfer.folds import assign_folds, evaluation_folds
from vfer.io import sha256_of
from vfer.models import SPECS
from vfer.samples import SamplesError, load_samples

try:
    SAMPLES = load_samples(
        config["samples"],
        config["classes"],
        schema=os.path.join(workflow.basedir, "workflow/schemas/samples.schema.yaml"),
    )
except SamplesError as exc:
    raise WorkflowError(f"invalid samples table: {exc}") from None

SHARD_SIZE = config["shard_size"]
SHARDS = {
    f"s{i // SHARD_SIZE:04d}": list(
        zip(SAMPLES["video_id"][i : i + SHARD_SIZE], SAMPLES["path"][i : i + SHARD_SIZE])
    )
    for i in range(0, len(SAMPLES), SHARD_SIZE)
}

# A dataset that cannot be split by the protocol (e.g. one subject) can still go through the
# faces, motion and feature stages; the rules that need folds say why they cannot run.
try:
    FOLDS = evaluation_folds(
        assign_folds(
            SAMPLES,
            config["protocol"]["name"],
            config["protocol"]["groups"],
            config["seed"],
            config["protocol"]["folds"],
        )
    )
    PROTOCOL_ERROR = None
except ValueError as exc:
    FOLDS, PROTOCOL_ERROR = [], f"protocol {config['protocol']['name']}: {exc}"


def folds_table(wildcards=None):
    """Input function for the folds table: stops with the protocol's problem, if any."""
    if PROTOCOL_ERROR:
        raise WorkflowError(PROTOCOL_ERROR)
    return "results/folds.tsv"

EXPERIMENTS = [e["name"] for e in config["experiments"]]
EXPERIMENT = {e["name"]: e for e in config["experiments"]}
STREAMS = sorted({s for e in config["experiments"] for s in e["streams"]})


def resolve_stream(name):
    """A stream's config, checked and completed (input size, seed)."""
    if name not in config["streams"]:
        raise WorkflowError(f"experiment stream {name!r} is not defined under 'streams'")
    s = dict(config["streams"][name])
    backbone, kind = s["backbone"], s["input"]
    if backbone in DESCRIPTORS:
        needs = "landmarks" if backbone == "landmarks" else "frames"
        if kind != needs or s["finetune"] != "none":
            raise WorkflowError(
                f"stream {name!r}: backbone {backbone} needs input: {needs} and finetune: none"
            )
    elif kind == "landmarks":
        raise WorkflowError(f"stream {name!r}: input landmarks needs backbone: landmarks")
    else:
        spec = SPECS[backbone]
        if s["layer"] is not None and s["layer"] not in spec.layers:
            raise WorkflowError(
                f"stream {name!r}: {backbone} has layers {sorted(spec.layers)}, not {s['layer']!r}"
            )
        if s["weights"] and not os.path.isfile(s["weights"]):
            raise WorkflowError(f"stream {name!r}: weights file not found: {s['weights']}")
    s["size"] = s["size"] or (SPECS[backbone].input_size if backbone in SPECS else 64)
    s["seed"] = config["seed"]
    return s


STREAM = {s: resolve_stream(s) for s in STREAMS}


def feature_file(stream, fold):
    """The features a fold's evaluation uses: the fold's model, or the one extraction."""
    part = f"fold{fold}" if STREAM[stream]["finetune"] == "per_fold" else "all"
    return f"results/features/{stream}/{part}.h5"


def method_key(method, params):
    """Output folder name for a method and its parameters: switching back finds the cache."""
    return f"{method}-{sha256_of(params)[:10]}"


FLOW_PARAMS = {
    "method": config["flow"]["method"],
    "params": config["flow"][config["flow"]["method"]],
    "bound": config["flow"]["bound"],
    "consecutive": config["flow"]["consecutive"],
    "store_raw": config["flow"]["store_raw"],
}
FLOW_KEY = method_key(config["flow"]["method"], FLOW_PARAMS)
STREAM_INPUTS = {STREAM[s]["input"] for s in STREAMS}
USES_FLOW = bool(STREAM_INPUTS & {"flow", "dynamic_flow"})
DYNAMIC_PARAMS = {
    "rgb": config["dynamic"]["rgb"],
    # Pooled flows depend on the flow method: the key includes the flow key.
    "flow": {**config["dynamic"]["flow"], "flow_key": FLOW_KEY},
}
DYNAMIC_KEY = {s: method_key(p["method"], p) for s, p in DYNAMIC_PARAMS.items()}
if "dynamic_flow" in STREAM_INPUTS and config["dynamic"]["flow"]["window"] and not config["flow"]["consecutive"]:
    raise WorkflowError("dynamic.flow.window pools consecutive flows: set flow.consecutive: true")

wildcard_constraints:
    shard=r"s\d{4}",
    fold=r"\d+",
    part=r"fold\d+|all",
    stream=r"[A-Za-z0-9_]+",
    experiment=r"[A-Za-z0-9_-]+",


def shard_files(pattern):
    return [pattern.format(shard=s) for s in SHARDS]


def stream_inputs(wildcards):
    """The stage files a stream reads, as named input lists."""
    kind = STREAM[wildcards.stream]["input"]
    if kind in ("frames", "landmarks"):
        return {
            "faces": shard_files("results/faces/{shard}.h5"),
            "segments": shard_files("results/segments/{shard}.h5"),
        }
    if kind == "flow":
        return {"flow": shard_files(f"results/flow/{FLOW_KEY}/{{shard}}.h5")}
    source = kind.split("_")[1]
    return {"dynamic": shard_files(f"results/dynamic/{source}/{DYNAMIC_KEY[source]}/{{shard}}.h5")}


def gpu_jobs(wildcards):
    """1 for CNN streams unless the config says device: cpu (the profiles cap gpu jobs)."""
    cnn = STREAM[wildcards.stream]["backbone"] not in DESCRIPTORS
    return int(cnn and config["device"] != "cpu")
