# Dynamic images by rank pooling, of the face frames (rgb) and of the flow fields (flow).
# Output folders are keyed by method and parameters (for flow, also by the flow variant's key).


rule dynamic_rgb:
    """Rank-pool the face frames of each segment (or window) into one image."""
    input:
        faces=rules.faces.output.h5,
        segments=rules.segments.output.h5,
    output:
        h5=ensure("results/dynamic/rgb/{dynamic_key}/{shard}.h5", non_empty=True),
    log:
        "logs/dynamic_rgb/{dynamic_key}/{shard}.log",
    benchmark:
        "benchmarks/dynamic_rgb/{dynamic_key}/{shard}.tsv"
    conda:
        "../../envs/motion.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        dynamic=lambda wc: dynamic_params("rgb")[wc.dynamic_key],
    script:
        "../scripts/dynamic.py"


rule dynamic_flow:
    """Rank-pool the flow fields of each segment (or window: ordered optical-flow maps)."""
    input:
        faces=rules.faces.output.h5,
        segments=rules.segments.output.h5,
        flow=lambda wc: flow_file(dynamic_params("flow")[wc.dynamic_key]["flow_key"], wc.shard),
    output:
        h5=ensure("results/dynamic/flow/{dynamic_key}/{shard}.h5", non_empty=True),
    log:
        "logs/dynamic_flow/{dynamic_key}/{shard}.log",
    benchmark:
        "benchmarks/dynamic_flow/{dynamic_key}/{shard}.tsv"
    conda:
        "../../envs/motion.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        dynamic=lambda wc: dynamic_params("flow")[wc.dynamic_key],
    script:
        "../scripts/dynamic.py"
