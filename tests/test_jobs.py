"""Jobs as processes (vfer.runtime): the start and end lines of their logs, `vfer status`,
the watchdog that stops a job whose snakemake is gone, and native libraries' log lines."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from vfer import cli
from vfer.runtime import ORPHANED_EXIT, job_logs, read_job_log

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def job(log: Path, body: str) -> str:
    """Python code of a job: set up its log as the workflow's scripts do, then ``body``."""
    return (f"from vfer.runtime import setup_logging\nlog = setup_logging({str(log)!r})\n"
            + textwrap.dedent(body))


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


def wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def status(workdir: Path, *args: str, capsys) -> str:
    assert cli.main(["status", str(workdir), *args]) == 0
    return capsys.readouterr().out


def test_finished_and_failed_jobs_read_back_from_their_logs(tmp_path, capsys):
    ok, bad = tmp_path / "logs/train/a/fold0.log", tmp_path / "logs/evaluate/b.log"
    subprocess.run([sys.executable, "-c", job(ok, "log.info('step 15/15 loss 0.1000')")],
                   env=ENV, check=True)
    result = subprocess.run([sys.executable, "-c", job(bad, """
        log.info('fold 0: accuracy 0.5 on 4 videos')
        raise ValueError('results/features/x/fold0.h5: damaged features file')
        """)], env=ENV, capture_output=True, text=True)
    assert result.returncode == 1  # the console gets the error after the log's name:
    assert result.stderr == f"{bad}: ValueError: results/features/x/fold0.h5: damaged features file\n"
    finished, failed = read_job_log(ok), read_job_log(bad)
    assert (finished.state, failed.state) == ("finished", "failed")
    assert finished.last.startswith("step 15/15 loss 0.1000 (at ")
    assert failed.last == "ValueError: results/features/x/fold0.h5: damaged features file"
    out = status(tmp_path, capsys=capsys)
    assert "logs/train/a/fold0.log" not in out  # finished jobs only with --all
    assert re.search(r"^failed +logs/evaluate/b.log: ValueError: results/features/x/fold0.h5: "
                     r"damaged features file$", out, re.M)
    assert "0 job(s) running, 1 finished, 1 failed, stopped or unfinished" in out
    assert "logs/train/a/fold0.log: step 15/15" in status(tmp_path, "--all", capsys=capsys)
    # a rerun appends to the log: only its latest attempt counts
    subprocess.run([sys.executable, "-c", job(bad, "log.info('fold 0: accuracy 1.0')")],
                   env=ENV, check=True)
    assert read_job_log(bad).state == "finished"
    assert [j.state for j in job_logs(tmp_path / "logs")] == ["finished", "finished"]


def test_a_job_stops_when_its_snakemake_is_killed_and_status_shows_its_progress(tmp_path, capsys):
    """A stand-in for snakemake (an executable named snakemake) starts a job, which reports a
    training step; kill -9 of the stand-in alone (not its group) stops the job within a few
    seconds, although the stand-in is not reaped (a zombie) meanwhile."""
    log = tmp_path / "logs/train/temporal/fold0.log"
    code = job(log, "log.info('step 5/15 loss 0.6572 validation loss 0.5477')\n"
                    "import time; time.sleep(120)")
    fake = tmp_path / "bin/snakemake"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport subprocess, sys, time\n"
                    f"job = subprocess.Popen([sys.executable, '-c', {code!r}])\n"
                    "print(job.pid, flush=True)\ntime.sleep(120)\n")
    fake.chmod(0o755)
    parent = subprocess.Popen([str(fake)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        wait_for(lambda: "step 5/15" in (log.read_text() if log.exists() else ""))
        out = status(tmp_path, capsys=capsys)
        assert re.search(r"^running +0:00:\d\d  logs/train/temporal/fold0.log: step 5/15 "
                         r"loss 0.6572 validation loss 0.5477 \(at \d\d:\d\d:\d\d\)$", out, re.M)
        assert "1 job(s) running" in out
        os.kill(parent.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: gone(pid), seconds=10)
        assert time.monotonic() - killed < 5
    finally:
        parent.kill()
        parent.wait()
    stopped = read_job_log(log)
    assert stopped.state == "stopped"
    assert stopped.last == (f"job stopped: snakemake (pid {parent.pid}) that started this job "
                            "is gone")
    assert re.search(r"^stopped +logs/train/temporal/fold0.log: job stopped",
                     status(tmp_path, capsys=capsys), re.M)


def test_a_job_script_whose_snakemake_died_while_it_started_exits_at_once(tmp_path):
    script = tmp_path / ".snakemake/scripts/tmpabc.train.py"  # where snakemake puts them
    script.parent.mkdir(parents=True)
    script.write_text(job(tmp_path / "x.log", "log.info('training')"))
    result = subprocess.run([sys.executable, str(script)], env=ENV)
    assert result.returncode == ORPHANED_EXIT
    stopped = read_job_log(tmp_path / "x.log")
    assert (stopped.state, stopped.last) == (
        "stopped", "job stopped: the snakemake that started this job is gone")


def test_no_watchdog_outside_snakemake(tmp_path):
    result = subprocess.run([sys.executable, "-c", job(tmp_path / "x.log", """
        import threading
        print([t.name for t in threading.enumerate()])
        """)], env=ENV, check=True)
    text = (tmp_path / "x.log").read_text()
    assert result.returncode == 0 and "['MainThread']" in text and "vfer-watchdog" not in text


def test_native_info_and_warning_lines_are_left_out(tmp_path):
    code = textwrap.dedent("""
        import os, sys
        from vfer.runtime import quiet_native_logs
        with quiet_native_logs():
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n"
                        b"WARNING: All log messages before absl::InitializeLog() is called are "
                        b"written to STDERR\\n"
                        b"W0000 00:00:1795419601.889246     408 inference_feedback_manager.cc:114]"
                        b" Feedback manager requires a model with a single signature inference.\\n"
                        b"E0000 00:00:1795419601.889246     408 calculator_graph.cc:887] "
                        b"a real error\\n"
                        b"plain text from C\\n")
            print("python's own stderr", file=sys.stderr)
            os.write(2, b"I0000 00:00:1.5 9 gl_context.cc:357] GL version\\nno newline")
        print("after", file=sys.stderr)
        """)
    result = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                            text=True, check=True)
    assert result.stderr.splitlines() == [
        "E0000 00:00:1795419601.889246     408 calculator_graph.cc:887] a real error",
        "plain text from C", "python's own stderr", "no newline" + "after"]


@pytest.mark.workflow
def test_faces_logs_and_the_console_hold_no_mediapipe_warnings(run):
    logs = sorted((run / "logs/faces").glob("*.log"))
    assert logs
    for log in logs:
        text = log.read_text()
        assert "inference_feedback_manager" not in text and "XNNPACK" not in text, log
        assert "lines of native libraries (MediaPipe, TensorFlow Lite)" in text, log
    console = "".join(p.read_text() for p in (run / ".snakemake/log").glob("*.log"))
    assert "Finished jobid" in console and "W0000" not in console
