rule faces:
    """Decode each video of a shard, track one face, store eye-aligned crops and landmarks."""
    input:
        videos=lambda wc: [path for _, path in SHARDS[wc.shard]],
    output:
        h5=ensure("results/faces/{shard}.h5", non_empty=True),
        failures="results/faces/{shard}.failures.tsv",
        sheet=report(
            "results/faces/{shard}.contact.png",
            caption="../report/contact.rst",
            category="Faces",
            labels={"shard": "{shard}"},
        ),
    log:
        "logs/faces/{shard}.log",
    benchmark:
        "benchmarks/faces/{shard}.tsv"
    conda:
        "../../envs/faces.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
    params:
        videos=lambda wc: SHARDS[wc.shard],
        faces=config["faces"],
    script:
        "../scripts/faces.py"
