"""Process set-up for workflow jobs: logging into the rule's log, threads, device, progress."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable

from tqdm import tqdm


def setup_logging(log_path: str | os.PathLike) -> logging.Logger:
    """Send this process's stdout, stderr (including native libraries') and logging to a file."""
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    fh = open(log_path, "a", buffering=1)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fh.fileno(), 1)
    os.dup2(fh.fileno(), 2)
    sys.stdout = sys.stderr = fh
    logging.basicConfig(level=logging.INFO, stream=fh, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return logging.getLogger("vfer")


def set_threads(n: int, opencv: int | None = None) -> None:
    """Limit OpenCV to ``opencv`` threads (default n; 1 where the job spreads OpenCV calls over
    its own n threads) and torch, when the job has imported it, to ``n`` (a job's ``threads``).
    Torch is not imported here: that alone takes ~1.5 s of every job's start-up."""
    import cv2

    cv2.setNumThreads(n if opencv is None else opencv)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def select_device(name: str = "auto"):
    """torch device for ``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but torch sees no CUDA device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def progress(items: Iterable, desc: str, total: int | None = None) -> Iterable:
    """A tqdm progress bar for the rule's log (plain ASCII, at most one line every 5 s)."""
    return tqdm(items, desc=desc, total=total, file=sys.stderr, mininterval=5.0, ascii=True)


def provenance(rule: str, config: dict, params: dict) -> dict:
    """Attrs every output carries: the rule, its parameters' hash and the whole config's hash."""
    from vfer.io import sha256_of

    return {"rule": rule, "params_sha256": sha256_of(params), "config_sha256": sha256_of(config)}
