"""A training step on one CPU core: the memory-format table behind
vfer.training.CHANNELS_FIRST_KERNEL and ``training.fit``'s time per step for the demo's and the
small presets' networks (benchmarks/NOTES.md, "Memory formats").

    PYTHONPATH=. .venv/bin/python benchmarks/bench_training_cpu.py [--kernels] [--fit]

With PYTHONPATH naming another checkout (``git worktree add /tmp/before <commit>``), the fit
figures are that checkout's: the way NOTES.md compares two commits.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.bench_gpu import MemorySource
from benchmarks.bench_presets_gpu import preset_config
from benchmarks.common import best_of, demo_config, demo_plan, timed
from vfer import training
from vfer.config import load
from vfer.runtime import reuse_freed_memory, set_threads

#: (system, model): "demo" is config/config.yaml, the others the small presets.
MODELS = [("demo", "spatial"), ("demo", "rgb_flow_lstm"), ("stc_nlstm", "stc_nlstm"),
          ("mffcnn", "small_k35_33"), ("mffcnn", "s2t_c51"), ("enhanced_convlstm", "proposed"),
          ("emotionalvlan", "vlan")]
#: (in channels, out channels, side, batch) of the convolutions in the kernel table.
CONVS = [(3, 8, 64, 16), (8, 16, 32, 16)]
KERNELS = (3, 5, 11, 17, 25, 29, 31, 35)


def kernel_table() -> list[str]:
    """Time of a Conv2d forward + backward channels-last over channels-first, per kernel."""
    lines = ["| convolution | " + " | ".join(f"{k} px" for k in KERNELS) + " |",
             "|---|" + "---|" * len(KERNELS)]
    for cin, cout, side, batch in CONVS:
        ratios = []
        for k in KERNELS:
            times = []
            for fmt in (torch.contiguous_format, torch.channels_last):
                conv = torch.nn.Conv2d(cin, cout, k, padding="same").to(memory_format=fmt)
                x = torch.rand(batch, cin, side, side).contiguous(memory_format=fmt)
                x.requires_grad_()
                step = lambda: conv(x).sum().backward()  # noqa: E731
                step()  # warm-up
                times.append(best_of(3, lambda: [step() for _ in range(3)]))
            ratios.append(f"{times[1] / times[0]:.2f}")
        lines.append(f"| {cin} -> {cout} maps, {side} px, batch {batch} | "
                     + " | ".join(ratios) + " |")
    return lines


def model_of(system: str, name: str) -> tuple[dict, list[str]]:
    if system == "demo":
        return demo_plan().models[name], demo_config()["classes"]
    config = preset_config(system, True)
    return load(config).models[name], config["classes"]


def samples(model: dict, classes: list[str]) -> training.SampleSet:
    """Eight videos of three random segments for every branch of ``model``."""
    rng = np.random.default_rng(0)
    sources, sizes = {}, {}
    for branch in model["network"]["branches"]:
        side, steps = branch["size"], branch["steps"]
        videos = {f"v{k}": rng.integers(0, 256, (3, steps, side, side, 3), dtype=np.uint8)
                  if side else rng.random((3, steps, branch["channels"]), dtype=np.float32)
                  for k in range(8)}
        sources[branch["name"]], sizes[branch["name"]] = MemorySource(videos), side
    labels = {f"v{k}": k % len(classes) for k in range(8)}
    return training.SampleSet(sources, sizes, sorted(labels), labels, cache_mb=1e9)


def fit_table() -> list[str]:
    """training.fit's milliseconds per step (augmentation as configured; no validation)."""
    lines = ["| model | batch | ms per step |", "|---|---|---|"]
    for system, name in MODELS:
        model, classes = model_of(system, name)
        cfg, data = model["train"], samples(model, classes)
        network, _ = training.initial_network(model, classes)

        def run(steps: int):
            training.fit(network, data, None, {**cfg, "steps": steps, "eval_every": steps}, 0,
                         torch.device("cpu"))

        steps = max(3, int(4 / (timed(run, 2) / 2)))  # ~4 s a round, after a warm-up
        ms = 1e3 * best_of(2, run, steps) / steps
        lines.append(f"| {system} {name} | {cfg['batch_size']} | {ms:.1f} |")
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", action="store_true", help="only the memory-format table")
    ap.add_argument("--fit", action="store_true", help="only the time per training step")
    args = ap.parse_args(argv)
    set_threads(1)
    reuse_freed_memory()  # as training jobs do
    both = not (args.kernels or args.fit)
    if args.kernels or both:
        print("\n".join(kernel_table()), flush=True)
    if args.fit or both:
        fit_table()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
