rule train:
    """Fine-tune one stream's CNN on the training subjects of one fold (never its test ones)."""
    input:
        unpack(stream_inputs),
        folds=folds_table,
        weights=lambda wc: STREAM[wc.stream]["weights"] or [],
    output:
        model="results/models/{stream}/fold{fold}.pt",
        info="results/models/{stream}/fold{fold}.json",
    params:
        stream=lambda wc: STREAM[wc.stream],
        classes=config["classes"],
        device=config["device"],
    log:
        "logs/train/{stream}/fold{fold}.log",
    benchmark:
        "benchmarks/train/{stream}/fold{fold}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=gpu_jobs,
    script:
        "../scripts/train.py"


def extract_inputs(wildcards):
    inputs = stream_inputs(wildcards)
    stream = STREAM[wildcards.stream]
    if (wildcards.part == "all") != (stream["finetune"] == "none"):
        raise WorkflowError(f"stream {wildcards.stream} has no features part {wildcards.part}")
    if wildcards.part != "all":
        fold = wildcards.part[len("fold") :]
        inputs["model"] = f"results/models/{wildcards.stream}/fold{fold}.pt"
        inputs["info"] = f"results/models/{wildcards.stream}/fold{fold}.json"
    elif stream.get("weights"):
        inputs["weights"] = stream["weights"]
    return inputs


rule extract:
    """Segment features of every video: with one fold's model (fold<k>), or once (all) for
    streams that are not fine-tuned."""
    input:
        unpack(extract_inputs),
    output:
        ensure("results/features/{stream}/{part}.h5", non_empty=True),
    params:
        stream=lambda wc: STREAM[wc.stream],
        classes=config["classes"],
        device=config["device"],
    log:
        "logs/extract/{stream}/{part}.log",
    benchmark:
        "benchmarks/extract/{stream}/{part}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=gpu_jobs,
    script:
        "../scripts/extract.py"
