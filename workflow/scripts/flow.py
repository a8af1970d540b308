"""Snakemake adapter for rule flow (see vfer.flow)."""
from vfer import flow
from vfer.runtime import provenance, set_threads, setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads, opencv=1)  # frame pairs are spread over the job's threads
params = dict(snakemake.params.flow)
flow.process_shard(
    snakemake.input.faces,
    snakemake.input.segments,
    snakemake.output[0],
    params["method"],
    dict(params["params"]),
    params["bound"],
    params["consecutive"],
    provenance(snakemake.rule, snakemake.config, params),
    threads=snakemake.threads,
    store_raw=params["store_raw"],
    device=snakemake.config["device"],  # not a param: a device switch reruns no flows
)
