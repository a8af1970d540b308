"""Snakemake adapter for rule train (see vfer.features.train_stream)."""
from vfer import features
from vfer.runtime import select_device, set_threads, setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
stream = dict(snakemake.params.stream)
inputs = snakemake.input
kind = stream["input"]
shards = features.shard_tuples(kind, inputs)
features.train_stream(
    kind,
    shards,
    inputs.folds,
    int(snakemake.wildcards.fold),
    stream,
    list(snakemake.params.classes),
    snakemake.params.seed + int(snakemake.wildcards.fold),
    select_device(snakemake.params.device),
    snakemake.output.model,
    snakemake.output.info,
)
