# The config and samples table, validated; shards, folds, the plan (vfer.config.Plan), the
# one path helper per stage file, and the rules' input functions. Everything here is computed
# once at parse time, which imports no torch, MediaPipe or TensorFlow (every SLURM job parses
# the workflow again; tests/test_conventions.py checks it).
import os
import sys

from snakemake.exceptions import WorkflowError

from vfer.config import ConfigError, load_schema, load
from vfer.folds import assign_folds, evaluation_folds
from vfer.nets.registry import INPUTS
from vfer.samples import SamplesError, load_samples

try:
    PLAN = load(
        config, load_schema(os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"))
    )
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
# Each path is the producing rule's output pattern filled in (rules.<name>.output), so the
# pattern is written once, in its rule. Called from input functions and params, which run
# after every rule file is included.
def rule_output(rule, name, **wildcards):
    """The output ``name`` of ``rule`` for these wildcard values."""
    return expand(getattr(getattr(rules, rule).output, name), **wildcards)[0]


def folds_table(wildcards=None):
    """Input function for the folds table: stops with the protocol's problem, if any."""
    if PROTOCOL_ERROR:
        raise WorkflowError(PROTOCOL_ERROR)
    return rule_output("folds", "tsv")


def faces_file(shard):
    return rule_output("faces", "h5", shard=shard)


def segments_file(shard):
    return rule_output("segments", "h5", shard=shard)


def flow_file(key, shard):
    return rule_output("flow", "h5", flow_key=key, shard=shard)


def dynamic_file(key, shard):
    """``key`` is "<source>/<method>-<params hash>" (source rgb or flow)."""
    source, dynamic_key = key.split("/", 1)
    return rule_output(f"dynamic_{source}", "h5", dynamic_key=dynamic_key, shard=shard)


def model_files(model, fold):
    """A fold's trained network and its record of training and validation videos."""
    return {name: rule_output("train", name, model=model, fold=fold) for name in ("model", "info")}


def features_file(model, fold):
    """The features a fold's evaluation uses: the fold's model, or the one extraction."""
    part = f"fold{fold}" if MODELS[model]["finetune"] == "per_fold" else "all"
    return rule_output("extract", "h5", model=model, part=part)


def source_files(source, shard):
    """The stage files (stage -> path) that an input source reads in one shard."""
    paths = {
        "faces": faces_file(shard),
        "segments": segments_file(shard),
        "flow": source["flow"] and flow_file(source["flow"], shard),
        "dynamic": source["dynamic"] and dynamic_file(source["dynamic"], shard),
    }
    return {stage: paths[stage] for stage in INPUTS.meta(source["input"])["stages"]}


# --- input functions and parameters of the rules -----------------------------------------
def model_inputs(wildcards):
    """A model's stage files as named input lists "<branch>__<stage>" (one file per shard)."""
    files = {}
    for branch, source in MODELS[wildcards.model]["sources"].items():
        for shard in SHARDS:
            for stage, path in source_files(source, shard).items():
                files.setdefault(f"{branch}__{stage}", []).append(path)
    return files


def initial_weights(wildcards):
    """The weight files a network starts from (none for random initialisation)."""
    return [w for w in MODELS[wildcards.model]["weights"].values() if w]


def extract_inputs(wildcards):
    """A model's stage files, and its fold's trained network (fold<k>) or, for networks
    extracted once (all), their initial weights."""
    inputs = model_inputs(wildcards)
    model = MODELS[wildcards.model]
    if (wildcards.part == "all") != (model["finetune"] == "none"):
        raise WorkflowError(f"{wildcards.model} has no features part {wildcards.part}")
    if wildcards.part != "all":
        inputs.update(model_files(wildcards.model, wildcards.part.removeprefix("fold")))
    elif model["kind"] == "network":
        inputs["weights"] = initial_weights(wildcards)
    return inputs


def evaluation_features(wildcards):
    """Every features file an experiment's folds read."""
    streams = PLAN.experiments[wildcards.experiment]["streams"]
    return sorted({features_file(s, f) for s in streams for f in FOLDS})


def features_by_fold(wildcards):
    """{stream: {fold: features file}} of an experiment (params of rule evaluate)."""
    streams = PLAN.experiments[wildcards.experiment]["streams"]
    return {s: {int(f): features_file(s, f) for f in FOLDS} for s in streams}


def final_models(experiment):
    """The models (streams, networks) of an experiment: {name: model}."""
    return {s: MODELS[s] for s in PLAN.experiments[experiment]["streams"]}


def final_networks(experiment):
    """{network: its final state_dict and record} of an experiment's networks."""
    return {
        m: {name: rule_output("final_train", name, model=m) for name in ("model", "info")}
        for m, model in final_models(experiment).items()
        if model["kind"] == "network"
    }


def final_features(experiment):
    """{stream: features file of every video} for an experiment's final model: the final
    network's, or the one extraction of a stream that is not fine-tuned."""
    return {
        m: (
            rule_output("final_extract", "h5", model=m)
            if model["finetune"] == "per_fold"
            else rule_output("extract", "h5", model=m, part="all")
        )
        for m, model in final_models(experiment).items()
    }


def final_extract_inputs(wildcards):
    """A model's stage files and its final network."""
    final = {n: rule_output("final_train", n, model=wildcards.model) for n in ("model", "info")}
    return {**model_inputs(wildcards), **final}


def final_inputs(wildcards):
    """The final features files and networks of an experiment, as named input lists."""
    networks = final_networks(wildcards.experiment)
    return {
        "features": sorted(final_features(wildcards.experiment).values()),
        "networks": sorted(p for files in networks.values() for p in files.values()),
        "faces": [faces_file(shard) for shard in SHARDS],
    }


def preview_inputs(wildcards):
    """The shard's faces and segments, its first flow variant and first dynamic images."""
    inputs = {"faces": faces_file(wildcards.shard), "segments": segments_file(wildcards.shard)}
    if PLAN.flows:
        inputs["flow"] = flow_file(next(iter(PLAN.flows)), wildcards.shard)
    for source in ("rgb", "flow"):
        keys = [k for k in PLAN.dynamics if k.startswith(f"{source}/")]
        if keys:
            inputs[f"dynamic_{source}"] = dynamic_file(keys[0], wildcards.shard)
    return inputs


def gpu_jobs(wildcards):
    """1 for networks unless the config says device: cpu (the profiles cap gpu jobs)."""
    return int(MODELS[wildcards.model]["kind"] == "network" and config["device"] != "cpu")


def flow_gpu_jobs(wildcards):
    """1 for a flow variant that computes on CUDA where present (backend auto or torch) unless
    the config says device: cpu: it sizes its batches to the device's free memory, so two
    such jobs on one GPU could both run out of it."""
    from vfer.flow import uses_gpu

    variant = PLAN.flows[wildcards.flow_key]
    return int(uses_gpu(variant["method"], variant["params"], config["device"]))


def dynamic_params(source):
    """The dynamic-image variants of one source in use: {key: params}."""
    prefix = f"{source}/"
    return {k[len(prefix) :]: p for k, p in PLAN.dynamics.items() if k.startswith(prefix)}


# --- the report ---------------------------------------------------------------------------
# With --report (and not --report-after-run) rule all asks only for the outputs that exist, so
# that the report of a failed (--keep-going) or partial run (e.g. one subject: features only)
# shows what was made, and its first page (results/report/overview.html, written when the
# report is requested) says what is missing and why.
OVERVIEW = "results/report/overview.html"


def report_requested(argv):
    """Whether this snakemake only makes the report (--report without --report-after-run)."""
    options = {a.split("=", 1)[0] for a in argv}
    return "--report" in options and "--report-after-run" not in options


def made(outputs):
    """Whether all of a job's outputs exist (vfer writes each one atomically)."""
    return all(os.path.exists(p) for p in outputs)


def report_jobs():
    """{what: the outputs of one job for the report}."""
    jobs = {}
    for shard in SHARDS:
        jobs[f"faces of shard {shard}"] = expand(rules.faces.output.sheet, shard=shard)
        jobs[f"motion preview of shard {shard}"] = expand(rules.preview.output.png, shard=shard)
    out = rules.evaluate.output
    for e in EXPERIMENTS:
        jobs[f"experiment {e}"] = expand([out.metrics, out.confusion, out.folds], experiment=e)
    jobs["summary"] = list(rules.summary.output)
    return jobs


def write_overview():
    """Write the report's first page from the outputs that exist; return those outputs."""
    from snakemake.logging import logger

    from vfer.report import overview_html, summarise
    from vfer.runtime import job_logs

    present, missing = [], []
    jobs = report_jobs()
    for what, outputs in jobs.items():
        if made(outputs):
            present += outputs
        else:
            missing.append(f"{what}: {outputs[0]}")
    done = [e for e in EXPERIMENTS if made(jobs[f"experiment {e}"])]
    page = None
    if done:
        evaluate = {e: dict(zip(["metrics", "confusion"], jobs[f"experiment {e}"])) for e in done}
        failures = expand(rules.faces.output.failures, shard=list(SHARDS))
        page = summarise(
            {e: files["metrics"] for e, files in evaluate.items()},
            {e: files["confusion"] for e, files in evaluate.items()},
            [p for p in failures if os.path.exists(p)],
        )["html"]
    problems = [f"the evaluation cannot run: {PROTOCOL_ERROR}"] if PROTOCOL_ERROR else []
    problems += [
        f"{job.state} job: {job.path}: {job.last}"
        for job in job_logs("logs")
        if job.state in ("failed", "stopped", "unfinished")
    ]
    os.makedirs(os.path.dirname(OVERVIEW), exist_ok=True)
    with open(OVERVIEW, "w") as fh:
        fh.write(overview_html(page, missing, problems))
    if missing:
        logger.warning(
            f"The report shows what exists; missing ({len(missing)}): "
            + "; ".join(missing)
            + "".join(f"\n  {p}" for p in problems)
        )
    return present


def final_targets(targets):
    """The final targets: ``targets``, or with --report the outputs that exist for the report."""
    return write_overview() if report_requested(sys.argv) else targets
