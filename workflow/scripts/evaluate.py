"""Snakemake adapter for rule evaluate (see vfer.evaluate)."""
import json

from vfer import evaluate, report
from vfer.folds import read_folds
from vfer.io import atomic_path
from vfer.runtime import setup_logging

setup_logging(snakemake.log[0])
experiment = snakemake.params.experiment
settings = evaluate.Settings.from_config(experiment, snakemake.params.aggregate,
                                         snakemake.params.seed)
files = {s: {int(f): p for f, p in per_fold.items()} for s, per_fold in snakemake.params.files.items()}
result, predictions = evaluate.run(
    read_folds(snakemake.input.folds), files, list(snakemake.params.classes), settings
)
result["experiment"] = experiment["name"]
with atomic_path(snakemake.output.metrics) as tmp:
    tmp.write_text(json.dumps(result, indent=1))
with atomic_path(snakemake.output.predictions) as tmp:
    predictions.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
title = f"{experiment['name']}: {100 * result['pooled']['accuracy']:.1f}% of all test videos right"
with atomic_path(snakemake.output.confusion) as tmp:
    report.confusion_figure(result["confusion_percent"], result["classes"], title, tmp)
with atomic_path(snakemake.output.folds) as tmp:
    report.fold_figure(result["folds"], experiment["name"], tmp)
