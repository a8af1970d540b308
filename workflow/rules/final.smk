# The final model of an experiment (docs/predict.md): its networks trained on every subject,
# features of every video, the classifier with the cross-validation's most frequent choices,
# written as a bundle that `vfer predict` loads without running code. Not part of rule all:
#   snakemake --cores all results/final/<experiment>


rule final_train:
    """Train one network on every subject (a val_fraction held out for early stopping)."""
    input:
        unpack(model_inputs),
        folds=folds_table,
        weights=initial_weights,
    output:
        model="results/models/{model}/final.pt",
        info="results/models/{model}/final.json",
    log:
        "logs/final_train/{model}.log",
    benchmark:
        "benchmarks/final_train/{model}.tsv"
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
        "../scripts/final_train.py"


rule final_extract:
    """Segment features of every video with the final network."""
    input:
        unpack(final_extract_inputs),
    output:
        h5=ensure("results/features/{model}/final.h5", non_empty=True),
    log:
        "logs/final_extract/{model}.log",
    benchmark:
        "benchmarks/final_extract/{model}.tsv"
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


rule final:
    """Fit the experiment's classifier on every video and write the bundle."""
    input:
        unpack(final_inputs),
        folds=folds_table,
        metrics=rules.evaluate.output.metrics,
    output:
        bundle=directory("results/final/{experiment}"),
    log:
        "logs/final/{experiment}.log",
    benchmark:
        "benchmarks/final/{experiment}.tsv"
    conda:
        "../../envs/results.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        experiment=lambda wc: PLAN.experiments[wc.experiment],
        models=lambda wc: final_models(wc.experiment),
        features=lambda wc: final_features(wc.experiment),
        networks=lambda wc: final_networks(wc.experiment),
        faces=config["faces"],
        segments=config["segments"],
        flows=PLAN.flows,
        dynamics=PLAN.dynamics,
        classes=config["classes"],
        aggregate=config["aggregate"],
        seed=config["seed"],
    script:
        "../scripts/final.py"
