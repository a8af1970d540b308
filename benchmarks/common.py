"""Shared pieces of the benchmarks: a result row, timing, and the finished demo run they read."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass
class Row:
    """One figure of RESULTS.md: its value, and the target it is held to (if any)."""

    section: str
    measure: str
    value: float
    unit: str
    target: float | None = None  # the value must not exceed it
    note: str = ""

    @property
    def met(self) -> str:
        if self.target is None:
            return ""
        return "yes" if self.value <= self.target else "no"


def timed(fn, *args, **kwargs) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def best_of(repeat: int, fn, *args, **kwargs) -> float:
    """The fastest of ``repeat`` calls (the least disturbed by other processes)."""
    return min(timed(fn, *args, **kwargs) for _ in range(repeat))


def compare(stage, floor, repeat: int) -> tuple[float, float, float]:
    """Interleaved runs of ``stage()`` and ``floor()`` (so that the machine's drifts hit both
    alike): the best time of each and the median of the per-run ratios stage / floor."""
    runs = [(timed(stage), timed(floor)) for _ in range(repeat)]
    ratios = sorted(s / f for s, f in runs)
    return min(s for s, _ in runs), min(f for _, f in runs), ratios[len(ratios) // 2]


def demo_config() -> dict:
    """config/config.yaml with the schema's defaults filled in, as the workflow sees it."""
    from vfer.config import validate

    return validate(yaml.safe_load((REPO / "config/config.yaml").read_text()))


def demo_plan():
    """The demo config's plan (vfer.config.Plan), as the workflow resolves it."""
    from vfer.config import resolve

    return resolve(demo_config())


def shard_paths(run: Path, shard: str = "s0000") -> dict[str, Path]:
    """A shard's files of a finished run: faces, segments, flow, dynamic (rgb)."""
    out = {"faces": run / f"results/faces/{shard}.h5",
           "segments": run / f"results/segments/{shard}.h5"}
    for name, pattern in (("flow", "results/flow/*/"), ("dynamic", "results/dynamic/rgb/*/")):
        found = sorted(run.glob(f"{pattern}{shard}.h5"))
        if found:
            out[name] = found[0]
    missing = [str(p) for p in out.values() if not p.exists()]
    if missing:
        sys.exit(f"missing {missing}: the workflow run has not finished")
    return out
