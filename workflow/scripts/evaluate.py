"""Snakemake adapter for rule evaluate (see vfer.evaluate)."""
import json

from vfer import evaluate, report
from vfer.features import read_folds
from vfer.io import atomic_path
from vfer.runtime import setup_logging

setup_logging(snakemake.log[0])
experiment = snakemake.params.experiment
classifier = snakemake.params.classifier
result, predictions = evaluate.run(
    read_folds(snakemake.input.folds),
    {s: {int(f): p for f, p in per_fold.items()} for s, per_fold in snakemake.params.files.items()},
    list(snakemake.params.classes),
    experiment.get("fusion", "concat"),
    classifier["kernel"],
    classifier["C"],
    snakemake.params.seed,
)
result["experiment"] = experiment["name"]
with atomic_path(snakemake.output.metrics) as tmp:
    tmp.write_text(json.dumps(result, indent=1))
with atomic_path(snakemake.output.predictions) as tmp:
    predictions.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
with atomic_path(snakemake.output.confusion) as tmp:
    report.confusion_figure(
        result["confusion_percent"],
        result["classes"],
        f"{experiment['name']}: accuracy {100 * result['mean']['accuracy']['mean']:.1f}%",
        tmp,
    )
