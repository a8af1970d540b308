rule evaluate:
    """Fuse an experiment's streams and evaluate an SVM over the subject-independent folds."""
    input:
        folds="results/folds.tsv",
        features=lambda wc: expand(
            "results/features/{stream}/fold{fold}.h5",
            stream=EXPERIMENT[wc.experiment]["streams"],
            fold=FOLDS,
        ),
    output:
        metrics="results/experiments/{experiment}/metrics.json",
        predictions="results/experiments/{experiment}/predictions.tsv",
        confusion="results/experiments/{experiment}/confusion.png",
    params:
        experiment=lambda wc: EXPERIMENT[wc.experiment],
        folds=FOLDS,
        classes=config["classes"],
        classifier=config["classifier"],
        seed=config["seed"],
    log:
        "logs/evaluate/{experiment}.log",
    benchmark:
        "benchmarks/evaluate/{experiment}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/evaluate.py"
