"""Snakemake adapter for rule train (see vfer.training.train_model)."""
from vfer.folds import read_folds
from vfer.inputs import group_inputs
from vfer.runtime import reuse_freed_memory, select_device, set_threads, setup_logging

setup_logging(snakemake.log[0])
from vfer import training  # noqa: E402 - after the log is set up, so torch's warnings land there

set_threads(snakemake.threads)
reuse_freed_memory()
model = snakemake.params.model
training.train_model(
    model,
    group_inputs(snakemake.input),
    read_folds(snakemake.input.folds),
    int(snakemake.wildcards.fold),
    list(snakemake.params.classes),
    select_device(snakemake.params.device),
    snakemake.output.model,
    snakemake.output.info,
)
