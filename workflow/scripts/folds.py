"""Snakemake adapter for rule folds (see vfer.folds)."""
from vfer.folds import assign_folds
from vfer.io import atomic_path
from vfer.runtime import setup_logging
from vfer.samples import SCHEMA, load_samples

setup_logging(snakemake.log[0])
protocol = snakemake.params.protocol
samples = load_samples(snakemake.input[0], snakemake.params.classes, SCHEMA)
folds = assign_folds(
    samples, protocol["name"], protocol["groups"], snakemake.params.seed, protocol["folds"],
    protocol["repeats"],
)
with atomic_path(snakemake.output[0]) as tmp:
    folds.to_csv(tmp, sep="\t", index=False)
print(folds.groupby("fold")["subject"].unique().to_string())
