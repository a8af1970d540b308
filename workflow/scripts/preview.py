"""Snakemake adapter for rule preview (see vfer.report.motion_preview)."""
from vfer import report
from vfer.io import write_png
from vfer.runtime import setup_logging

setup_logging(snakemake.log[0])
dynamic = {k: v for k, v in snakemake.input.items() if k.startswith("dynamic_")}
write_png(
    snakemake.output[0],
    report.motion_preview(
        snakemake.input.faces, snakemake.input.segments, snakemake.input.get("flow"), dynamic
    ),
)
