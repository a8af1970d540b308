"""Snakemake adapter for rule dynamic (see vfer.dynamic)."""
from vfer import dynamic
from vfer.runtime import provenance, setup_logging

setup_logging(snakemake.log[0])
params = dict(snakemake.params.dynamic)
dynamic.process_shard(
    snakemake.input.faces,
    snakemake.input.segments,
    snakemake.output[0],
    provenance(snakemake.rule, snakemake.config, params),
)
