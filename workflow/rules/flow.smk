rule flow:
    """Optical flow images of every distinct frame pair of a shard's segments.

    The output folder is keyed by the method and its parameters, so switching methods back
    and forth finds what was already computed.
    """
    input:
        faces="results/faces/{shard}.h5",
        segments="results/segments/{shard}.h5",
    output:
        ensure(f"results/flow/{FLOW_KEY}/{{shard}}.h5", non_empty=True),
    params:
        flow=FLOW_PARAMS,
    log:
        f"logs/flow/{FLOW_KEY}/{{shard}}.log",
    benchmark:
        f"benchmarks/flow/{FLOW_KEY}/{{shard}}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
    script:
        "../scripts/flow.py"
