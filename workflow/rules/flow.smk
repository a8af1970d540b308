rule flow:
    """Optical flow images of every distinct frame pair of a shard's segments, for one flow
    variant. The folder is keyed by the method and its parameters, so switching methods
    back and forth finds what was already computed."""
    input:
        faces=rules.faces.output.h5,
        segments=rules.segments.output.h5,
    output:
        h5=ensure("results/flow/{flow_key}/{shard}.h5", non_empty=True),
    log:
        "logs/flow/{flow_key}/{shard}.log",
    benchmark:
        "benchmarks/flow/{flow_key}/{shard}.tsv"
    conda:
        "../../envs/motion.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
        gpu=flow_gpu_jobs,
    params:
        flow=lambda wc: PLAN.flows[wc.flow_key],
    script:
        "../scripts/flow.py"
