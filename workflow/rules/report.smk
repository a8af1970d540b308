rule summary:
    """One row per experiment (mean +- std over folds), a page for the report, failed videos."""
    input:
        metrics=expand("results/experiments/{experiment}/metrics.json", experiment=EXPERIMENTS),
        confusion=expand(
            "results/experiments/{experiment}/confusion.png", experiment=EXPERIMENTS
        ),
        failures=shard_files("results/faces/{shard}.failures.tsv"),
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
    params:
        experiments=EXPERIMENTS,
    log:
        "logs/summary/summary.log",
    benchmark:
        "benchmarks/summary/summary.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    localrule: True
    script:
        "../scripts/summary.py"


def preview_inputs(wildcards):
    """The shard's faces and segments, its first flow variant and first dynamic images."""
    inputs = {"faces": faces_file(wildcards.shard), "segments": segments_file(wildcards.shard)}
    if PLAN.flows:
        inputs["flow"] = flow_file(next(iter(PLAN.flows)), wildcards.shard)
    for source in ("rgb", "flow"):
        keys = [k for k in PLAN.dynamics if k.startswith(f"{source}/")]
        if keys:
            inputs[f"dynamic_{source}"] = dynamic_file(keys[0], wildcards.shard)
    return inputs


rule preview:
    """Per shard: a few videos' first segment as frames, colour-coded flows, dynamic images."""
    input:
        unpack(preview_inputs),
    output:
        report(
            "results/preview/{shard}.png",
            caption="../report/preview.rst",
            category="Motion",
            labels={"shard": "{shard}"},
        ),
    log:
        "logs/preview/{shard}.log",
    benchmark:
        "benchmarks/preview/{shard}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    localrule: True
    script:
        "../scripts/preview.py"
