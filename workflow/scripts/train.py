"""Snakemake adapter for rule train (see vfer.features.train_stream)."""
from vfer import features
from vfer.runtime import select_device, set_threads, setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
stream = dict(snakemake.params.stream)
features.train_stream(
    stream["input"],
    features.shard_tuples(stream["input"], snakemake.input),
    snakemake.input.folds,
    int(snakemake.wildcards.fold),
    stream,
    list(snakemake.params.classes),
    select_device(snakemake.params.device),
    snakemake.output.model,
    snakemake.output.info,
)
