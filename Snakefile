# vfer: video-based facial expression recognition, one reproducible and resumable workflow.
#   snakemake --cores all                       run the default config (the demo dataset)
#   snakemake --cores all --configfile config/methods/<preset>.yaml --config samples=<table>
from snakemake.utils import min_version

min_version("9.27")


# config/config.yaml unless a --configfile is given, which replaces it rather than merging
# into it: an edited copy gets nothing back of what it removed, and no demo stream or network
# merges into one of the same name.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/faces.smk"
include: "workflow/rules/segments.smk"
include: "workflow/rules/flow.smk"
include: "workflow/rules/dynamic.smk"
include: "workflow/rules/folds.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/final.smk"


localrules:
    all,


rule all:
    input:
        final_targets(
            [
                rules.summary.output.markdown,
                rules.summary.output.csv,
                rules.summary.output.html,
                expand(rules.evaluate.output.metrics, experiment=EXPERIMENTS),
                expand(rules.preview.output.png, shard=list(SHARDS)),
            ]
        ),
