rule train:
    """Fine-tune one stream's CNN on the training subjects of one fold (never its test ones)."""
    input:
        unpack(stream_inputs),
        folds="results/folds.tsv",
    output:
        model="results/models/{stream}/fold{fold}.pt",
        info="results/models/{stream}/fold{fold}.json",
    params:
        stream=lambda wc: config["streams"][wc.stream],
        classes=config["classes"],
        seed=config["seed"],
        device=config["device"],
    log:
        "logs/train/{stream}/fold{fold}.log",
    benchmark:
        "benchmarks/train/{stream}/fold{fold}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=gpu_jobs(),
    script:
        "../scripts/train.py"


rule extract:
    """Segment features of every video with one fold's model, to HDF5."""
    input:
        unpack(stream_inputs),
        model="results/models/{stream}/fold{fold}.pt",
        info="results/models/{stream}/fold{fold}.json",
    output:
        ensure("results/features/{stream}/fold{fold}.h5", non_empty=True),
    params:
        stream=lambda wc: config["streams"][wc.stream],
        classes=config["classes"],
        device=config["device"],
    log:
        "logs/extract/{stream}/fold{fold}.log",
    benchmark:
        "benchmarks/extract/{stream}/fold{fold}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=gpu_jobs(),
    script:
        "../scripts/extract.py"
