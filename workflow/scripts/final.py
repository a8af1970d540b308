"""Snakemake adapter for rule final (see vfer.final.build)."""
from vfer import final
from vfer.folds import read_folds
from vfer.runtime import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
final.build(
    p.experiment,
    p.models,
    final.preprocessing(p.faces, p.segments, p.flows, p.dynamics, p.models),
    list(p.classes),
    p.aggregate,
    p.seed,
    read_folds(snakemake.input.folds),
    dict(p.features),
    {m: (files["model"], files["info"]) for m, files in p.networks.items()},
    snakemake.input.metrics,
    list(snakemake.input.faces),
    snakemake.output[0],
)
