# Dynamic images by rank pooling, of the face frames (rgb) and of the flow fields (flow).
# Output folders are keyed by method and parameters (for flow, also by the flow method).


rule dynamic_rgb:
    """Rank-pool the face frames of each segment (or window) into one image."""
    input:
        faces="results/faces/{shard}.h5",
        segments="results/segments/{shard}.h5",
    output:
        ensure(f"results/dynamic/rgb/{DYNAMIC_KEY['rgb']}/{{shard}}.h5", non_empty=True),
    params:
        dynamic=DYNAMIC_PARAMS["rgb"],
    log:
        f"logs/dynamic_rgb/{DYNAMIC_KEY['rgb']}/{{shard}}.log",
    benchmark:
        f"benchmarks/dynamic_rgb/{DYNAMIC_KEY['rgb']}/{{shard}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    script:
        "../scripts/dynamic.py"


rule dynamic_flow:
    """Rank-pool the flow fields of each segment (or window: ordered optical-flow maps)."""
    input:
        faces="results/faces/{shard}.h5",
        segments="results/segments/{shard}.h5",
        flow=f"results/flow/{FLOW_KEY}/{{shard}}.h5",
    output:
        ensure(f"results/dynamic/flow/{DYNAMIC_KEY['flow']}/{{shard}}.h5", non_empty=True),
    params:
        dynamic=DYNAMIC_PARAMS["flow"],
    log:
        f"logs/dynamic_flow/{DYNAMIC_KEY['flow']}/{{shard}}.log",
    benchmark:
        f"benchmarks/dynamic_flow/{DYNAMIC_KEY['flow']}/{{shard}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    script:
        "../scripts/dynamic.py"
