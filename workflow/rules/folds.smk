rule folds:
    """Subject-independent folds: the test fold of every video (all of a subject's together)."""
    input:
        lambda wc: folds_table() and config["samples"],
    output:
        tsv="results/folds.tsv",
    log:
        "logs/folds/folds.log",
    benchmark:
        "benchmarks/folds/folds.tsv"
    localrule: True
    conda:
        "../../envs/results.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        protocol=config["protocol"],
        classes=config["classes"],
        seed=config["seed"],
    script:
        "../scripts/folds.py"
