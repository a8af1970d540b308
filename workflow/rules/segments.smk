rule segments:
    """Cut each video of a shard into fixed-length segments (frame indices only)."""
    input:
        faces=lambda wc: faces_file(wc.shard),
    output:
        ensure("results/segments/{shard}.h5", non_empty=True),
    params:
        segments=config["segments"],
    log:
        "logs/segments/{shard}.log",
    benchmark:
        "benchmarks/segments/{shard}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/segments.py"
