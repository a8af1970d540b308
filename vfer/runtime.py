"""Process set-up for workflow jobs: logging into the rule's log, a watchdog that stops a job
whose snakemake is gone, quiet native libraries, threads, device, progress; and the reading
of job logs (``vfer status``, the report's first page)."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import importlib.util
import logging
import os
import re
import shutil
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger("vfer.runtime")

#: The lines a job writes into its log when it starts and ends (read back by read_job_log).
STARTED, FINISHED, FAILED, STOPPED = "job started (pid {pid})", "job finished", "job failed", \
    "job stopped: "
#: Seconds between two checks that the snakemake which started a job still runs.
WATCHDOG_SECONDS = 1.0
#: Exit status of a job stopped by its watchdog.
ORPHANED_EXIT = 75


def setup_logging(log_path: str | os.PathLike) -> logging.Logger:
    """Send this process's stdout, stderr (including native libraries') and logging to a file,
    mark the job's start and end in it, and start the watchdog (start_watchdog). An uncaught
    error's traceback goes to the log, and its last line, after the log's name, to the
    console as well (snakemake's, or a cluster job's output)."""
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    fh = open(log_path, "a", buffering=1)
    sys.stdout.flush()
    sys.stderr.flush()
    console = os.fdopen(os.dup(2), "w", buffering=1)

    def excepthook(kind, value, tb):
        sys.__excepthook__(kind, value, tb)
        error = "".join(traceback.format_exception_only(kind, value)).strip()
        console.write(f"{log_path}: {error}\n")

    sys.excepthook = excepthook
    os.dup2(fh.fileno(), 1)
    os.dup2(fh.fileno(), 2)
    sys.stdout = sys.stderr = fh
    logging.basicConfig(level=logging.INFO, stream=fh, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info(STARTED.format(pid=os.getpid()))
    atexit.register(_log_end)
    start_watchdog()
    return logging.getLogger("vfer")


def _log_end() -> None:
    """At exit: 'job failed' after an uncaught exception (its traceback is above), else
    'job finished'."""
    log.info(FAILED if hasattr(sys, "last_value") else FINISHED)


# --- watchdog: a job stops when the snakemake that started it is gone ----------------------

def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks) of a process, None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


def _is_snakemake(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    names = [os.path.basename(a) for a in argv[:2]]
    return b"snakemake" in names or argv[1:3] == [b"-m", b"snakemake"]


def snakemake_ancestor() -> tuple[int, int] | None:
    """(pid, start time) of the outermost snakemake process above this one, or None.

    Outermost, because a job may sit under a snakemake that Snakemake itself started (a
    cluster job's own snakemake); the one the user started is the highest."""
    found, pid = None, os.getppid()
    while pid > 1:
        stat = _proc_stat(pid)
        if stat is None:
            break
        if _is_snakemake(pid):
            found = (pid, stat[2])
        pid = stat[1]
    return found


def _alive(pid: int, start: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[2] == start and stat[0] not in "ZX"


def _orphaned(reason: str) -> None:
    log.error("%s%s", STOPPED, reason)
    logging.shutdown()
    os._exit(ORPHANED_EXIT)


def start_watchdog(interval: float = WATCHDOG_SECONDS) -> threading.Thread | None:
    """Exit this process (status ORPHANED_EXIT) within ``interval`` seconds of the snakemake
    that started it dying (e.g. killed with kill -9), so that a resumed run never finds a
    second copy of a job still writing. Outputs are written under temporary names, so the
    stopped job leaves no output that looks finished. A job script of snakemake's (under
    ``.snakemake/scripts/``) that finds no snakemake above it lost it while starting, and
    exits at once. Returns the thread, or None outside snakemake."""
    parent = snakemake_ancestor()
    if parent is None:
        if "/.snakemake/scripts/" in os.path.abspath(sys.argv[0]):
            _orphaned("the snakemake that started this job is gone")
        return None

    def watch():
        while True:
            time.sleep(interval)
            if not _alive(*parent):
                _orphaned(f"snakemake (pid {parent[0]}) that started this job is gone")

    thread = threading.Thread(target=watch, name="vfer-watchdog", daemon=True)
    thread.start()
    return thread


# --- native libraries' log lines -------------------------------------------------------------

#: INFO and WARNING lines that MediaPipe, TensorFlow Lite, absl and glog write to stderr from
#: C++ (e.g. "W0000 00:00:1700000000.1 12 inference_feedback_manager.cc:114] Feedback manager
#: requires ..."): they repeat for every video and say nothing about the results. Errors
#: (E..., F...) pass.
NATIVE_NOISE = re.compile(
    rb"^(?:[IW]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] "
    rb"|INFO: Created TensorFlow Lite"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called)")


@contextlib.contextmanager
def quiet_native_logs(pattern: re.Pattern = NATIVE_NOISE) -> Iterator[None]:
    """Within the block, drop the lines written to file descriptor 2 (native libraries'
    stderr) that match ``pattern``; other lines pass unchanged. Python's own writes to
    sys.stderr pass too. On leaving, the number of dropped lines is logged."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    dropped = [0]

    def pump():
        pending = b""
        while chunk := os.read(read_end, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = [line for line in lines if not pattern.match(line)]
            dropped[0] += len(lines) - len(kept)
            if kept:
                os.write(saved, b"".join(line + b"\n" for line in kept))
        if pending and not pattern.match(pending):
            os.write(saved, pending)

    thread = threading.Thread(target=pump, name="vfer-native-log", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump drains it and ends
        thread.join()
        os.close(read_end)
        os.close(saved)
        if dropped[0]:
            log.info("left out %d INFO/WARNING lines of native libraries (MediaPipe, "
                     "TensorFlow Lite)", dropped[0])


# --- threads, device, progress ---------------------------------------------------------------

def set_threads(n: int, opencv: int | None = None) -> None:
    """Limit OpenCV to ``opencv`` threads (default n; 1 where the job spreads OpenCV calls over
    its own n threads) and torch, when the job has imported it, to ``n`` (a job's ``threads``).
    Torch is not imported here: that alone takes ~1.5 s of every job's start-up."""
    import cv2

    cv2.setNumThreads(n if opencv is None else opencv)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


#: glibc malloc settings for a job (mallopt): blocks up to 32 MiB, glibc's largest threshold on
#: 64-bit systems, come from the heap instead of fresh memory maps, and freed heap memory is
#: returned to the system only beyond 1 GiB at its top.
MMAP_THRESHOLD, TRIM_THRESHOLD = 32 * 2 ** 20, 2 ** 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def reuse_freed_memory() -> bool:
    """Let the C allocator keep the memory a job frees for its next arrays (MMAP_THRESHOLD,
    TRIM_THRESHOLD), instead of unmapping it and faulting fresh zeroed pages in again: each
    training step frees and reallocates the same activations (the demo's rgb_flow_lstm on a
    CPU core: 145 -> 103 ms a step, the same peak memory; benchmarks/NOTES.md). Not for jobs
    whose threads free each other's arrays (the flow stage: slower with it). Returns False where
    the C library has no glibc ``mallopt`` (nothing changes there)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def select_device(name: str = "auto"):
    """torch device for ``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but torch sees no CUDA device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def to_host(t):
    """A tensor as a numpy array on the host; from CUDA copied into page-locked memory (on
    the H200 machine of benchmarks/GPU.md, 103 MB of flows took 97 ms into new pageable memory
    and 1.9 ms into page-locked memory). The array holds its page-locked block until it is
    freed; torch's host allocator then reuses the block for the next copy."""
    import torch

    if t.device.type != "cuda":
        return t.detach().cpu().numpy()
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    out.copy_(t.detach())  # waits for the copy
    return out.numpy()


def compiles_by_default(device) -> bool:
    """Whether the flow solvers fuse their iterations with torch.compile by default on
    ``device`` (a torch device or its name): on CUDA where Triton, torch.compile's GPU code
    generator, can build its kernel launchers (triton_can_build). On the CPU they run one
    torch operation at a time (compiling costs ~20-60 s a process there, more than the flows
    of a test)."""
    return str(device).startswith("cuda") and triton_can_build()


@functools.lru_cache
def triton_can_build() -> bool:
    """Triton is installed, with what it compiles its kernel launchers with at the first
    compiled call: a C compiler (``CC``, else gcc or clang, as Triton looks) and Python's
    headers. Without them that call fails, so the flows run uncompiled (same values, slower);
    a warning says which is missing."""
    if importlib.util.find_spec("triton") is None:
        return False
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    missing = []
    if not (cc and shutil.which(cc.split()[0])):
        missing.append("a C compiler (CC, gcc or clang)")
    if not header.is_file():
        missing.append(f"Python's headers ({header})")
    if missing:
        log.warning("flows run uncompiled on CUDA (slower): Triton needs %s to build its "
                    "kernel launchers", " and ".join(missing))
    return not missing


def progress(items: Iterable, desc: str, total: int | None = None) -> Iterable:
    """A tqdm progress bar for the rule's log (plain ASCII, at most one line every 5 s)."""
    return tqdm(items, desc=desc, total=total, file=sys.stderr, mininterval=5.0, ascii=True)


def provenance(rule: str, config: dict, params: dict) -> dict:
    """Attrs every output carries: the rule, its parameters' hash and the whole config's hash."""
    from vfer.io import sha256_of

    return {"rule": rule, "params_sha256": sha256_of(params), "config_sha256": sha256_of(config)}


# --- reading job logs --------------------------------------------------------------------------

_MARK = re.compile(r"^(\S+ \S+) INFO vfer\.runtime: job started \(pid (\d+)\)$", re.M)
_END = re.compile(r"^\S+ \S+ \w+ vfer\.runtime: (job finished|job failed|job stopped: .*)$",
                  re.M)
#: How much of the end of a log is read (the latest attempt's start line must lie in it).
TAIL_BYTES = 1 << 20


@dataclass(frozen=True)
class JobLog:
    """The latest attempt of the job that writes one log file."""

    path: Path
    state: str  # running (here), finished, failed, stopped (its snakemake died), unfinished
    # (no end line and no process here: killed, or running on another machine)
    pid: int
    started: datetime
    last: str  # the last line (a progress bar's latest update), or the error


_LOGGED = re.compile(r"^\S+ (\d\d:\d\d:\d\d),\d+ [A-Z]+ [\w.]+: (.*)$")


def _last_line(text: str) -> str:
    """The last non-empty line (progress bars overwrite theirs with carriage returns); a
    logged message as "<message> (at <time>)"."""
    parts = [p.strip() for p in re.split(r"[\r\n]+", text)]
    line = next((p for p in reversed(parts) if p), "")
    logged = _LOGGED.match(line)
    return f"{logged[2]} (at {logged[1]})" if logged else line


def _writes_to(pid: int, path: Path) -> bool:
    """Whether process ``pid`` runs with ``path`` as its stderr (a job writing this log)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/fd/2")) == path.resolve()
    except OSError:
        return False


def read_job_log(path: str | os.PathLike) -> JobLog | None:
    """The state of the latest attempt recorded in a job log, or None without a start line."""
    path = Path(path)
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - TAIL_BYTES))
        text = fh.read().decode("utf-8", "replace")
    starts = list(_MARK.finditer(text))
    if not starts:
        return None
    mark = starts[-1]
    attempt = text[mark.end():]
    pid = int(mark[2])
    started = datetime.strptime(mark[1], "%Y-%m-%d %H:%M:%S,%f")
    ends = _END.findall(attempt)
    body = _END.sub("", attempt)
    if _writes_to(pid, path):
        state = "running"
    elif not ends:
        state = "unfinished"
    else:
        state = {"job finished": "finished", "job failed": "failed"}.get(ends[-1], "stopped")
    last = ends[-1] if state == "stopped" else _last_line(body)
    return JobLog(path, state, pid, started, last)


def job_logs(root: str | os.PathLike = "logs") -> list[JobLog]:
    """The latest attempt of every job whose log lies under ``root``, by path."""
    found = (read_job_log(p) for p in sorted(Path(root).rglob("*.log")))
    return [j for j in found if j is not None]
