# Networks (streams are one-input networks) trained per fold on training subjects only, and
# segment features (and class scores) of every video; descriptors are extracted once.


rule train:
    """Train one network on the training subjects of one fold (never its test ones)."""
    input:
        unpack(model_inputs),
        folds=folds_table,
        weights=lambda wc: [w for w in MODELS[wc.model]["weights"].values() if w],
    output:
        model="results/models/{model}/fold{fold}.pt",
        info="results/models/{model}/fold{fold}.json",
    params:
        model=lambda wc: MODELS[wc.model],
        classes=config["classes"],
        device=config["device"],
    log:
        "logs/train/{model}/fold{fold}.log",
    benchmark:
        "benchmarks/train/{model}/fold{fold}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=gpu_jobs,
    script:
        "../scripts/train.py"


def extract_inputs(wildcards):
    inputs = model_inputs(wildcards)
    model = MODELS[wildcards.model]
    if (wildcards.part == "all") != (model["finetune"] == "none"):
        raise WorkflowError(f"{wildcards.model} has no features part {wildcards.part}")
    if wildcards.part != "all":
        inputs["model"] = f"results/models/{wildcards.model}/{wildcards.part}.pt"
        inputs["info"] = f"results/models/{wildcards.model}/{wildcards.part}.json"
    elif model["kind"] == "network":
        inputs["weights"] = [w for w in model["weights"].values() if w]
    return inputs


rule extract:
    """Segment features of every video: with one fold's network (fold<k>), or once (all) for
    descriptors and networks that are not trained."""
    input:
        unpack(extract_inputs),
    output:
        ensure("results/features/{model}/{part}.h5", non_empty=True),
    params:
        model=lambda wc: MODELS[wc.model],
        classes=config["classes"],
        device=config["device"],
    log:
        "logs/extract/{model}/{part}.log",
    benchmark:
        "benchmarks/extract/{model}/{part}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=gpu_jobs,
    script:
        "../scripts/extract.py"
