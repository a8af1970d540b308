"""Snakemake adapter for rule segments (see vfer.segments)."""
from vfer import segments
from vfer.runtime import provenance, setup_logging

setup_logging(snakemake.log[0])
params = dict(snakemake.params.segments)
segments.process_shard(
    snakemake.input.faces,
    snakemake.output[0],
    params,
    provenance(snakemake.rule, snakemake.config, params),
)
