"""The SLURM profile really submits: a single-node SLURM (Debian's slurm-wlm and munge) is
started here, the tiny workflow runs with --profile profiles/slurm, and its jobs are found in
squeue and in the executor's job logs. Needs root and apt (as in CI); skips otherwise."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.tiny import STREAM, prepare, snakemake

pytestmark = pytest.mark.workflow
CONF = Path("/etc/slurm/slurm.conf")  # job steps drop SLURM_CONF: it has to be here
CONFIG = {
    "samples": "data/samples.tsv", "classes": ["happiness", "surprise"], "shard_size": 8,
    "faces": {"size": [64, 64]}, "device": "cpu",
    "streams": {"spatial": {"input": "frames", **STREAM, "steps": 5},
                "handcrafted": {"input": "frames", "backbone": "hog", "finetune": "none"}},
    "protocol": {"name": "losgo", "groups": 2},
    "experiments": [{"name": "fused", "streams": ["spatial", "handcrafted"]}],
}
RULES = {"faces", "segments", "train", "extract", "evaluate"}  # folds, summary, preview: local


def slurm_conf(state: Path) -> str:
    host = socket.gethostname().split(".")[0]
    with open("/proc/meminfo") as f:
        total_mb = int(f.readline().split()[1]) // 1024
    return "\n".join([
        "ClusterName=vfer-test", f"SlurmctldHost={host}", "SlurmUser=root",
        "AuthType=auth/munge", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
        "DefMemPerCPU=500", "MinJobAge=600", "MpiDefault=none", "ReturnToService=2",
        "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
        f"StateSaveLocation={state}/state", f"SlurmdSpoolDir={state}/spool",
        f"SlurmctldPidFile={state}/slurmctld.pid", f"SlurmdPidFile={state}/slurmd.pid",
        f"SlurmctldLogFile={state}/slurmctld.log", f"SlurmdLogFile={state}/slurmd.log",
        f"NodeName={host} CPUs={os.cpu_count()} RealMemory={int(total_mb * 0.8)} State=UNKNOWN",
        f"PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""])


def install_slurm() -> None:
    """Debian's slurm-wlm and munge, or a skip saying why they cannot be installed."""
    if shutil.which("slurmctld") and shutil.which("munged"):
        return
    if not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and there is no apt-get to install slurm-wlm")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "slurm-wlm",
                 "munge"]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode:
            pytest.skip(f"{' '.join(cmd[:2])} failed: {(done.stderr or done.stdout)[-300:]}")


def stop(pid_file: Path) -> None:
    try:
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    except (OSError, ValueError):
        pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A single-node SLURM started for this module and stopped (by PID) after it."""
    if os.geteuid() != 0:
        pytest.skip("starting SLURM daemons needs root")
    install_slurm()
    if CONF.exists():
        pytest.skip(f"{CONF} exists: this machine has its own SLURM, which the test leaves alone")
    if subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0:
        pytest.skip("a slurmctld is already running here")
    state = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (state / sub).mkdir()
    CONF.parent.mkdir(exist_ok=True)
    CONF.write_text(slurm_conf(state))
    started = []
    try:
        munge_pid = Path("/run/munge/munged.pid")
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode:
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
            started.append(munge_pid)
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([f"/usr/sbin/{daemon}"], check=True, timeout=60)
            started.append(state / f"{daemon}.pid")
        deadline = time.monotonic() + 120
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True,
                                           text=True).stdout:
            assert time.monotonic() < deadline, (state / "slurmctld.log").read_text()[-2000:]
            time.sleep(1)
        yield state
    finally:
        for pid_file in reversed(started):
            stop(pid_file)
        CONF.unlink(missing_ok=True)


def test_the_slurm_profile_submits_every_job_through_slurm(cluster, tmp_path):
    workdir = prepare(tmp_path, CONFIG)
    result = snakemake(
        workdir, "--profile", str(REPO / "profiles/slurm"),
        "--set-resources", "train:gpu=0", "extract:gpu=0",  # this test cluster has no GPUs
        "--slurm-keep-successful-logs", "--slurm-init-seconds-before-status-checks", "1",
        "--seconds-between-status-checks", "2", timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (workdir / "results/experiments/fused/metrics.json").exists()
    jobs = subprocess.run(["squeue", "-a", "-h", "-t", "all", "-o", "%k|%T"],
                          capture_output=True, text=True, check=True).stdout.split()
    ran = {comment.split("_wildcards_")[0].removeprefix("rule_"): state
           for comment, state in (line.split("|") for line in jobs)}
    assert set(ran) == RULES and set(ran.values()) == {"COMPLETED"}, jobs
    for rule in RULES:
        logs = list((workdir / ".snakemake/slurm_logs" / f"rule_{rule}").rglob("*.log"))
        assert logs, rule
    local = workdir / ".snakemake/slurm_logs/rule_summary"
    assert not local.exists()  # local rules run where snakemake runs
