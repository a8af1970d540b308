# The summary across experiments and the motion previews; what `snakemake --report` shows is
# chosen by final_targets (common.smk).


rule summary:
    """One row per experiment (mean +- std over folds), a page for the report, failed videos."""
    input:
        metrics=expand(rules.evaluate.output.metrics, experiment=EXPERIMENTS),
        confusion=expand(rules.evaluate.output.confusion, experiment=EXPERIMENTS),
        failures=expand(rules.faces.output.failures, shard=list(SHARDS)),
    output:
        markdown="results/summary.md",
        csv="results/summary.csv",
        html=report(
            "results/summary.html",
            caption="../report/summary.rst",
            category="Results",
            labels={"table": "summary"},
        ),
        failures=report(
            "results/failures.tsv",
            caption="../report/failures.rst",
            category="Results",
            labels={"table": "failed videos"},
        ),
    log:
        "logs/summary/summary.log",
    benchmark:
        "benchmarks/summary/summary.tsv"
    localrule: True
    conda:
        "../../envs/results.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        experiments=EXPERIMENTS,
    script:
        "../scripts/summary.py"


rule preview:
    """Per shard: a few videos' first segment as frames, colour-coded flows, dynamic images."""
    input:
        unpack(preview_inputs),
    output:
        png=report(
            "results/preview/{shard}.png",
            caption="../report/preview.rst",
            category="Motion",
            labels={"shard": "{shard}"},
        ),
    log:
        "logs/preview/{shard}.log",
    benchmark:
        "benchmarks/preview/{shard}.tsv"
    localrule: True
    conda:
        "../../envs/results.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/preview.py"
