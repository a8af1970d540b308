rule evaluate:
    """Fuse an experiment's streams and evaluate a classifier (or the networks' own softmax)
    over the subject-independent folds; everything fitted (scaling, projection, C, fusion
    weights) sees training subjects only."""
    input:
        folds=folds_table,
        features=evaluation_features,
    output:
        metrics="results/experiments/{experiment}/metrics.json",
        predictions="results/experiments/{experiment}/predictions.tsv",
        confusion=report(
            "results/experiments/{experiment}/confusion.png",
            caption="../report/confusion.rst",
            category="Results",
            subcategory="Confusion matrices",
            labels={"experiment": "{experiment}"},
        ),
        folds=report(
            "results/experiments/{experiment}/folds.png",
            caption="../report/folds.rst",
            category="Results",
            subcategory="Per-fold accuracy",
            labels={"experiment": "{experiment}"},
        ),
    log:
        "logs/evaluate/{experiment}.log",
    benchmark:
        "benchmarks/evaluate/{experiment}.tsv"
    conda:
        "../../envs/results.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        experiment=lambda wc: PLAN.experiments[wc.experiment],
        files=features_by_fold,
        classes=config["classes"],
        aggregate=config["aggregate"],
        seed=config["seed"],
    script:
        "../scripts/evaluate.py"
