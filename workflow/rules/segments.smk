rule segments:
    """Cut each video of a shard into fixed-length segments (frame indices only)."""
    input:
        faces=rules.faces.output.h5,
    output:
        h5=ensure("results/segments/{shard}.h5", non_empty=True),
    log:
        "logs/segments/{shard}.log",
    benchmark:
        "benchmarks/segments/{shard}.tsv"
    conda:
        "../../envs/motion.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        segments=config["segments"],
    script:
        "../scripts/segments.py"
