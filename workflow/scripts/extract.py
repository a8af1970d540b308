"""Snakemake adapter for rule extract (see vfer.features)."""
from vfer.inputs import group_inputs
from vfer.runtime import provenance, reuse_freed_memory, select_device, set_threads, setup_logging

setup_logging(snakemake.log[0])
from vfer import features  # noqa: E402 - after the log is set up, so torch's warnings land there

set_threads(snakemake.threads)
reuse_freed_memory()
model = snakemake.params.model
shards = group_inputs(snakemake.input)
attrs = provenance(snakemake.rule, snakemake.config, model)
if model["kind"] == "descriptor":
    features.describe(model, shards["main"], snakemake.output[0], attrs)
else:
    features.extract_model(
        model,
        shards,
        list(snakemake.params.classes),
        select_device(snakemake.params.device),
        snakemake.output[0],
        attrs,
        model_path=snakemake.input.get("model"),
        info_path=snakemake.input.get("info"),
    )
