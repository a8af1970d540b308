# The config and samples table, validated; shards, folds, the plan (vfer.config.Plan), and
# the one path helper per stage file. Everything here is computed once at parse time, and
# nothing here imports torch.
import os

from snakemake.exceptions import WorkflowError

from vfer.config import ConfigError, load_schema, load
from vfer.folds import assign_folds, evaluation_folds
from vfer.nets.registry import INPUTS
from vfer.samples import SamplesError, load_samples

try:
    PLAN = load(config, load_schema(os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

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
            config["protocol"]["repeats"],
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


EXPERIMENTS = list(PLAN.experiments)
MODELS = PLAN.models


wildcard_constraints:
    shard=r"s\d{4}",
    fold=r"\d+",
    part=r"fold\d+|all",
    model=r"[A-Za-z0-9_]+",
    experiment=r"[A-Za-z0-9_-]+",
    flow_key=r"[a-z_0-9]+-[0-9a-f]{10}",
    dynamic_key=r"[a-z_0-9]+-[0-9a-f]{10}",


# --- stage files: one path helper per stage ----------------------------------------------
def faces_file(shard):
    return f"results/faces/{shard}.h5"


def segments_file(shard):
    return f"results/segments/{shard}.h5"


def flow_file(key, shard):
    return f"results/flow/{key}/{shard}.h5"


def dynamic_file(key, shard):
    """``key`` is "<source>/<method>-<params hash>" (source rgb or flow)."""
    return f"results/dynamic/{key}/{shard}.h5"


def features_file(model, fold):
    """The features a fold's evaluation uses: the fold's model, or the one extraction."""
    part = f"fold{fold}" if MODELS[model]["finetune"] == "per_fold" else "all"
    return f"results/features/{model}/{part}.h5"


def shard_files(pattern):
    return [pattern.format(shard=s) for s in SHARDS]


def source_files(source, shard):
    """The stage files (stage -> path) that an input source reads in one shard."""
    paths = {
        "faces": faces_file(shard),
        "segments": segments_file(shard),
        "flow": source["flow"] and flow_file(source["flow"], shard),
        "dynamic": source["dynamic"] and dynamic_file(source["dynamic"], shard),
    }
    return {stage: paths[stage] for stage in INPUTS.meta(source["input"])["stages"]}


def model_inputs(wildcards):
    """A model's stage files as named input lists "<branch>__<stage>" (one file per shard)."""
    files = {}
    for branch, source in MODELS[wildcards.model]["sources"].items():
        for shard in SHARDS:
            for stage, path in source_files(source, shard).items():
                files.setdefault(f"{branch}__{stage}", []).append(path)
    return files


def gpu_jobs(wildcards):
    """1 for networks unless the config says device: cpu (the profiles cap gpu jobs)."""
    return int(MODELS[wildcards.model]["kind"] == "network" and config["device"] != "cpu")


def dynamic_params(source):
    """The dynamic-image variants of one source in use: {key: params}."""
    return {k.split("/", 1)[1]: p for k, p in PLAN.dynamics.items() if k.startswith(f"{source}/")}
