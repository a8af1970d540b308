# The summary across experiments, the motion previews, and what `snakemake --report` shows:
# with --report (and not --report-after-run) rule all asks only for the outputs that exist, so
# that the report of a failed (--keep-going) or partial run (e.g. one subject: features only)
# shows what was made, and its first page (results/report/overview.html, written when the
# report is requested) says what is missing and why.
import sys

from snakemake.logging import logger

from vfer.report import overview_html, summarise
from vfer.runtime import job_logs

OVERVIEW = "results/report/overview.html"


def report_requested(argv):
    """Whether this snakemake only makes the report (--report without --report-after-run)."""
    options = {a.split("=", 1)[0] for a in argv}
    return "--report" in options and "--report-after-run" not in options


def made(outputs):
    """Whether all of a job's outputs exist (vfer writes each one atomically)."""
    return all(os.path.exists(p) for p in outputs)


def report_jobs():
    """{what: the outputs of one job for the report}."""
    jobs = {}
    for shard in SHARDS:
        jobs[f"faces of shard {shard}"] = [f"results/faces/{shard}.contact.png"]
        jobs[f"motion preview of shard {shard}"] = [f"results/preview/{shard}.png"]
    for e in EXPERIMENTS:
        jobs[f"experiment {e}"] = [f"results/experiments/{e}/{name}" for name in
                                   ("metrics.json", "confusion.png", "folds.png")]
    jobs["summary"] = ["results/summary.md", "results/summary.csv", "results/summary.html",
                       "results/failures.tsv"]
    return jobs


def write_overview():
    """Write the report's first page from the outputs that exist; return those outputs."""
    present, missing = [], []
    for what, outputs in report_jobs().items():
        if made(outputs):
            present += outputs
        else:
            missing.append(f"{what}: {outputs[0]}")
    done = [e for e in EXPERIMENTS if made(report_jobs()[f"experiment {e}"])]
    page = summarise(
        {e: f"results/experiments/{e}/metrics.json" for e in done},
        {e: f"results/experiments/{e}/confusion.png" for e in done},
        [p for p in shard_files("results/faces/{shard}.failures.tsv") if os.path.exists(p)],
    )["html"] if done else None
    problems = [f"the evaluation cannot run: {PROTOCOL_ERROR}"] if PROTOCOL_ERROR else []
    problems += [f"{job.state} job: {job.path}: {job.last}" for job in job_logs("logs")
                 if job.state in ("failed", "stopped", "unfinished")]
    os.makedirs(os.path.dirname(OVERVIEW), exist_ok=True)
    with open(OVERVIEW, "w") as fh:
        fh.write(overview_html(page, missing, problems))
    if missing:
        logger.warning(f"The report shows what exists; missing ({len(missing)}): "
                       + "; ".join(missing) + "".join(f"\n  {p}" for p in problems))
    return present


REPORT_TARGETS = write_overview() if report_requested(sys.argv) else None


def final_targets(targets):
    """rule all's inputs: ``targets``, or with --report the report's outputs that exist."""
    return targets if REPORT_TARGETS is None else REPORT_TARGETS


rule summary:
    """One row per experiment (mean +- std over folds), a page for the report, failed videos."""
    input:
        metrics=expand("results/experiments/{experiment}/metrics.json", experiment=EXPERIMENTS),
        confusion=expand(
            "results/experiments/{experiment}/confusion.png", experiment=EXPERIMENTS
        ),
        failures=shard_files("results/faces/{shard}.failures.tsv"),
    output:
        markdown="results/summary.md",
        csv="results/summary.csv",
        html=report(
            "results/summary.html",
            caption="../report/summary.rst",
            category="Results",
            labels={"table": "summary"},
        ),
        failures=report(
            "results/failures.tsv",
            caption="../report/failures.rst",
            category="Results",
            labels={"table": "failed videos"},
        ),
    params:
        experiments=EXPERIMENTS,
    log:
        "logs/summary/summary.log",
    benchmark:
        "benchmarks/summary/summary.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    localrule: True
    script:
        "../scripts/summary.py"


def preview_inputs(wildcards):
    """The shard's faces and segments, its first flow variant and first dynamic images."""
    inputs = {"faces": faces_file(wildcards.shard), "segments": segments_file(wildcards.shard)}
    if PLAN.flows:
        inputs["flow"] = flow_file(next(iter(PLAN.flows)), wildcards.shard)
    for source in ("rgb", "flow"):
        keys = [k for k in PLAN.dynamics if k.startswith(f"{source}/")]
        if keys:
            inputs[f"dynamic_{source}"] = dynamic_file(keys[0], wildcards.shard)
    return inputs


rule preview:
    """Per shard: a few videos' first segment as frames, colour-coded flows, dynamic images."""
    input:
        unpack(preview_inputs),
    output:
        report(
            "results/preview/{shard}.png",
            caption="../report/preview.rst",
            category="Motion",
            labels={"shard": "{shard}"},
        ),
    log:
        "logs/preview/{shard}.log",
    benchmark:
        "benchmarks/preview/{shard}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    localrule: True
    script:
        "../scripts/preview.py"
