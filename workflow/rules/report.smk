rule summary:
    """One row per experiment (mean +- std over folds) and the table of failed videos."""
    input:
        metrics=expand("results/experiments/{experiment}/metrics.json", experiment=EXPERIMENTS),
        failures=shard_files("results/faces/{shard}.failures.tsv"),
    output:
        markdown="results/summary.md",
        csv="results/summary.csv",
        failures="results/failures.tsv",
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
