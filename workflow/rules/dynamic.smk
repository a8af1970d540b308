rule dynamic:
    """Approximate rank pooling: one dynamic image per segment."""
    input:
        faces="results/faces/{shard}.h5",
        segments="results/segments/{shard}.h5",
    output:
        ensure(f"results/dynamic/{DYNAMIC_KEY}/{{shard}}.h5", non_empty=True),
    params:
        dynamic=config["dynamic"],
    log:
        f"logs/dynamic/{DYNAMIC_KEY}/{{shard}}.log",
    benchmark:
        f"benchmarks/dynamic/{DYNAMIC_KEY}/{{shard}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/dynamic.py"
