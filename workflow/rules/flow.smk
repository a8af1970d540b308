rule flow:
    """Optical flow images of every distinct frame pair of a shard's segments, for one flow
    variant. The folder is keyed by the method and its parameters, so switching methods
    back and forth finds what was already computed."""
    input:
        faces=lambda wc: faces_file(wc.shard),
        segments=lambda wc: segments_file(wc.shard),
    output:
        ensure("results/flow/{flow_key}/{shard}.h5", non_empty=True),
    params:
        flow=lambda wc: PLAN.flows[wc.flow_key],
    log:
        "logs/flow/{flow_key}/{shard}.log",
    benchmark:
        "benchmarks/flow/{flow_key}/{shard}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
    script:
        "../scripts/flow.py"
