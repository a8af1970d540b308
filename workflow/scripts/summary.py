"""Snakemake adapter for rule summary (see vfer.report)."""
import json

import pandas as pd

from vfer import report
from vfer.io import atomic_path
from vfer.runtime import setup_logging

setup_logging(snakemake.log[0])
results = {}
for name, path in zip(snakemake.params.experiments, snakemake.input.metrics):
    with open(path) as fh:
        results[name] = json.load(fh)
failures = pd.concat(
    [pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
     for p in snakemake.input.failures], ignore_index=True
)
table = report.summary_table(results)
best = int(table["accuracy_mean"].to_numpy().argmax())
with open(snakemake.input.confusion[best], "rb") as fh:
    page = report.summary_html(table, fh.read(), table["experiment"][best], failures)
markdown = report.summary_markdown(table, failures)
with atomic_path(snakemake.output.csv) as tmp:
    table.to_csv(tmp, index=False, float_format="%.4f")
with atomic_path(snakemake.output.failures) as tmp:
    failures.to_csv(tmp, sep="\t", index=False)
with atomic_path(snakemake.output.html) as tmp:
    tmp.write_text(page)
with atomic_path(snakemake.output.markdown) as tmp:
    tmp.write_text(markdown)
print(markdown)
