# Networks (streams are one-input networks) trained per fold on training subjects only, and
# segment features (and class scores) of every video; descriptors are extracted once.


rule train:
    """Train one network on the training subjects of one fold (never its test ones)."""
    input:
        unpack(model_inputs),
        folds=folds_table,
        weights=initial_weights,
    output:
        model="results/models/{model}/fold{fold}.pt",
        info="results/models/{model}/fold{fold}.json",
    log:
        "logs/train/{model}/fold{fold}.log",
    benchmark:
        "benchmarks/train/{model}/fold{fold}.tsv"
    conda:
        "../../envs/networks.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=gpu_jobs,
    params:
        model=lambda wc: MODELS[wc.model],
        classes=config["classes"],
        device=config["device"],
    script:
        "../scripts/train.py"


rule extract:
    """Segment features of every video: with one fold's network (fold<k>), or once (all) for
    descriptors and networks that are not trained."""
    input:
        unpack(extract_inputs),
    output:
        h5=ensure("results/features/{model}/{part}.h5", non_empty=True),
    log:
        "logs/extract/{model}/{part}.log",
    benchmark:
        "benchmarks/extract/{model}/{part}.tsv"
    conda:
        "../../envs/networks.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=gpu_jobs,
    params:
        model=lambda wc: MODELS[wc.model],
        classes=config["classes"],
        device=config["device"],
    script:
        "../scripts/extract.py"
