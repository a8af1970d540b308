"""Snakemake adapter for rule faces (see vfer.faces)."""
from vfer import faces
from vfer.runtime import provenance, set_threads, setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
params = dict(snakemake.params.faces)
faces.process_shard(
    [tuple(v) for v in snakemake.params.videos],
    snakemake.output.h5,
    snakemake.output.failures,
    snakemake.output.sheet,
    params,
    provenance(snakemake.rule, snakemake.config, params),
)
