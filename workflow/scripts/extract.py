"""Snakemake adapter for rule extract (see vfer.features.extract_stream)."""
from vfer import features
from vfer.runtime import provenance, select_device, set_threads, setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
stream = dict(snakemake.params.stream)
features.extract_stream(
    stream["input"],
    features.shard_tuples(stream["input"], snakemake.input),
    snakemake.wildcards.stream,
    stream,
    list(snakemake.params.classes),
    select_device(snakemake.params.device),
    snakemake.output[0],
    provenance(snakemake.rule, snakemake.config, stream),
    model_path=snakemake.input.get("model"),
    info_path=snakemake.input.get("info"),
)
