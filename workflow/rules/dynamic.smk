# Dynamic images by rank pooling, of the face frames (rgb) and of the flow fields (flow).
# Output folders are keyed by method and parameters (for flow, also by the flow variant's key).


rule dynamic_rgb:
    """Rank-pool the face frames of each segment (or window) into one image."""
    input:
        faces=lambda wc: faces_file(wc.shard),
        segments=lambda wc: segments_file(wc.shard),
    output:
        ensure("results/dynamic/rgb/{dynamic_key}/{shard}.h5", non_empty=True),
    params:
        dynamic=lambda wc: dynamic_params("rgb")[wc.dynamic_key],
    log:
        "logs/dynamic_rgb/{dynamic_key}/{shard}.log",
    benchmark:
        "benchmarks/dynamic_rgb/{dynamic_key}/{shard}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    script:
        "../scripts/dynamic.py"


rule dynamic_flow:
    """Rank-pool the flow fields of each segment (or window: ordered optical-flow maps)."""
    input:
        faces=lambda wc: faces_file(wc.shard),
        segments=lambda wc: segments_file(wc.shard),
        flow=lambda wc: flow_file(dynamic_params("flow")[wc.dynamic_key]["flow_key"], wc.shard),
    output:
        ensure("results/dynamic/flow/{dynamic_key}/{shard}.h5", non_empty=True),
    params:
        dynamic=lambda wc: dynamic_params("flow")[wc.dynamic_key],
    log:
        "logs/dynamic_flow/{dynamic_key}/{shard}.log",
    benchmark:
        "benchmarks/dynamic_flow/{dynamic_key}/{shard}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    script:
        "../scripts/dynamic.py"
