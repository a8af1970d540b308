"""Snakemake adapter for rule summary (see vfer.report.summarise)."""
from vfer import report
from vfer.io import atomic_path
from vfer.runtime import setup_logging

setup_logging(snakemake.log[0])
names = snakemake.params.experiments
summary = report.summarise(dict(zip(names, snakemake.input.metrics)),
                           dict(zip(names, snakemake.input.confusion)),
                           list(snakemake.input.failures))
with atomic_path(snakemake.output.csv) as tmp:
    summary["table"].to_csv(tmp, index=False, float_format="%.4f")
with atomic_path(snakemake.output.failures) as tmp:
    summary["failures"].to_csv(tmp, sep="\t", index=False)
with atomic_path(snakemake.output.html) as tmp:
    tmp.write_text(summary["html"])
with atomic_path(snakemake.output.markdown) as tmp:
    tmp.write_text(summary["markdown"])
print(summary["markdown"])
