"""Snakemake adapter for rules dynamic_rgb and dynamic_flow (see vfer.dynamic)."""
from vfer import dynamic
from vfer.runtime import provenance, setup_logging

setup_logging(snakemake.log[0])
params = dict(snakemake.params.dynamic)
dynamic.process_shard(
    snakemake.rule.split("_")[1],
    snakemake.input.faces,
    snakemake.input.segments,
    snakemake.input.get("flow"),
    snakemake.output[0],
    params,
    provenance(snakemake.rule, snakemake.config, params),
)
