"""The tiny workflow the workflow tests run: 8 generated clips of 4 subjects, two classes, five
streams and a two-input network with an LSTM, and helpers to call snakemake on a folder and
read its dry-run plans."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
STREAM = {"backbone": "small_cnn", "size": 24, "finetune": "per_fold", "steps": 15,
          "batch_size": 16, "lr": 0.003, "eval_every": 5}
NET_INPUT = {"backbone": "small_cnn", "size": 24, "backbone_options": {"channels": [4, 8], "fc": 16}}
CONFIG = {
    "samples": "data/samples.tsv",
    "classes": ["happiness", "surprise"],
    "shard_size": 4,
    "faces": {"size": [64, 64]},
    "flow": {"bound": 2},
    "streams": {"spatial": {"input": "frames", **STREAM}, "temporal": {"input": "flow", **STREAM},
                "dynamic": {"input": "dynamic_rgb", **STREAM},
                "landmarks": {"input": "landmarks", "backbone": "landmarks", "finetune": "none"},
                "handcrafted": {"input": "frames", "backbone": "hog", "finetune": "none"}},
    "networks": {"rgb_flow": {"inputs": {"rgb": {"input": "frames", **NET_INPUT},
                                         "flow": {"input": "flow", **NET_INPUT}},
                              "temporal": {"kind": "lstm", "hidden": 16}, "steps": 10,
                              "batch_size": 4, "eval_every": 5}},
    "protocol": {"name": "losgo", "groups": 2},
    "experiments": [{"name": "spatial", "streams": ["spatial"]},
                    {"name": "temporal", "streams": ["temporal"]},
                    {"name": "fused", "streams": ["spatial", "temporal", "dynamic", "landmarks",
                                                  "handcrafted"]},
                    {"name": "rgb_flow", "streams": ["rgb_flow"],
                     "classifier": {"kind": "softmax"}}],
}


def command(workdir: Path, *args: str) -> list[str]:
    return [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args]


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(command(workdir, *args), capture_output=True, text=True,
                          timeout=timeout)


def planned(output: str) -> dict[str, int]:
    """Job counts from a dry run's 'Job stats' table (empty when nothing is to be done)."""
    if "Job stats:" not in output:
        assert "Nothing to be done" in output, output[-2000:]
        return {}
    stats = output.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def declared_gpus(output: str) -> set[tuple[str, str, int]]:
    """(rule, wildcards, gpu) of each job of a dry run's output."""
    jobs = set()
    for block in output.split("\nrule ")[1:]:
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        gpu = re.search(r"^\s+resources: .*\bgpu=(\d+)", block, re.M)
        jobs.add((block.split(":")[0], wildcards[1] if wildcards else "",
                  int(gpu[1]) if gpu else 0))
    return jobs


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config))


def prepare(workdir: Path, config: dict = CONFIG) -> Path:
    """Generate the tiny dataset (always the same clips) and its config in ``workdir``."""
    from vfer.demo import generate

    generate(workdir / "data", seed=5, subjects=4, clips=1, classes=("happiness", "surprise"),
             processes=2)
    write_config(workdir, config)
    return workdir
