"""Where the time goes in the figures of GPU.md that missed their targets: the training step
(small_cnn, alexnet), Horn-Schunck at 112 x 112 and TV-L1 against one CPU core.

    PYTHONPATH=. python -m benchmarks.profile_gpu [--out benchmarks/GPU-PROFILE.md]
    PYTHONPATH=. python -m benchmarks.profile_gpu --check-on-cpu   # the script, tiny sizes

Where torch sees no CUDA device it says so and exits 0, writing nothing. Sections:

- training step, milliseconds per step, adding fit's parts one at a time to bench_gpu's bare
  step (the same network, optimizer and resident batch): normalisation of a resident uint8
  batch (``network_inputs``), augmentation (``augment``), batches drawn from the stored set as
  fit draws them (``_batches``, the store placed as fit places it), and ``fit`` itself;
- fit's operations, from torch.profiler over fit's steps: per step, calls, host time and
  device time of the operations that take the most host time, and the device's busy share;
- where fit's steps make the host wait for the device (torch's CUDA sync debug mode): each
  calling line and its count;
- a host-to-device copy of 64 sample indices, with the device's queue full: host time per
  call through page-locked memory (``training.upload``) and from pageable memory, and whether
  the host waited for the queue;
- Horn-Schunck (``flow.horn_schunck``, batch as bench_gpu's) as a whole and in its parts:
  upload, solver on resident tensors, flows back (``runtime.to_host``);
- TV-L1 at 112 x 112 (``tvl1.tvl1``, the flow stage's batch): pairs/s for other intervals
  between stopping checks, other shares at which stopped pairs leave the working batch and
  the host's reading of the count waiting at each check or lagging (``tvl1._SCHEDULE``), each
  checked equal to the default's flows; the device's busy share.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from benchmarks.bench_gpu import (QUICK, Sizes, best_time, synchronised, textures,
                                  train_steps, training_rig)
from benchmarks.common import REPO

OUT = REPO / "benchmarks" / "GPU-PROFILE.md"
#: (backbone, input side) of the training steps that missed 75% of bare.
TRAINED = [("small_cnn", 128), ("alexnet", 227)]
#: TV-L1 schedules tried (tvl1._SCHEDULE): iterations between stopping checks, share of the
#: working batch, checks by which the host's reading lags.
SCHEDULES = [(4, 0.75, 0), (1, 0.75, 1), (4, 0.75, 1), (16, 0.75, 1), (4, 0.5, 1),
             (4, 1.0, 1), (2, 0.75, 2)]


def training_parts(backbone: str, size: int, device, sizes: Sizes) -> list[str]:
    """One table row: ms per step of bare and of fit's parts added one at a time."""
    import torch

    from vfer import training

    rig, sync = training_rig(backbone, size, device, sizes), synchronised(device)
    steps, aug = train_steps(rig, device, sizes, sync), rig.cfg["augment"]
    batch = sizes.train_batch
    raw = {"s": training.upload(np.random.default_rng(1).integers(
        0, 256, (batch, 1, size, size, 3), dtype=np.uint8), device)}
    draws = training.augment_draws(torch.Generator().manual_seed(0), batch, aug["flip"],
                                   aug["rotate"], aug["crop"], device, training.CHUNK)
    training.place_on_device(rig.samples, device)

    def drawn():
        inputs, zeros, y = next(batches)
        return training.augment(training.network_inputs(inputs, device), zeros,
                                next(draws)), y

    batches = training._batches(rig.samples, rig.cfg, np.random.default_rng(0), device)
    parts = [rig.bare(steps, device),
             rig.loop(steps, device, lambda: (training.network_inputs(raw, device), rig.y)),
             rig.loop(steps, device, lambda: (training.augment(
                 training.network_inputs(raw, device), {"s": None}, next(draws)), rig.y)),
             rig.loop(steps, device, drawn),
             rig.fit(steps, device)]
    try:
        ms = [1e3 * best_time(part, sizes.repeat, sync) / steps for part in parts]
    finally:
        batches.close()
    return [f"| {backbone} {size}, batch {batch} | " + " | ".join(f"{t:.2f}" for t in ms)
            + " |"]


def fit_operations(device, sizes: Sizes, top: int = 15) -> list[str]:
    """torch.profiler's table of fit's steps for the first network of TRAINED."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    backbone, size = TRAINED[0]
    rig, sync = training_rig(backbone, size, device, sizes), synchronised(device)
    steps = max(3, min(50, train_steps(rig, device, sizes, sync)))
    run = rig.fit(steps, device)
    run()
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        run()
        sync()
    wall = time.perf_counter() - start
    events = [e for e in prof.key_averages() if e.self_cpu_time_total or e.self_device_time_total]
    busy = sum(e.self_device_time_total for e in events) / 1e6 / wall
    share = f", the device busy {100 * busy:.0f}% of it" if device.type == "cuda" else ""
    lines = [f"{backbone} {size}, batch {sizes.train_batch}, {steps} steps profiled: "
             f"{1e3 * wall / steps:.2f} ms per step under the profiler{share}.", "",
             "| operation | calls per step | host us per step | device us per step |",
             "|---|---|---|---|"]
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
        lines.append(f"| {e.key} | {e.count / steps:.1f} | {e.self_cpu_time_total / steps:.1f}"
                     f" | {e.self_device_time_total / steps:.1f} |")
    return lines


def fit_syncs(device, sizes: Sizes, steps: int = 20) -> list[str]:
    """Where ``steps`` of fit make the host wait for the device: torch's CUDA sync debug mode
    set to "warn" over the run; each place (the Python line that called the operation) and its
    count."""
    import warnings

    import torch

    backbone, size = TRAINED[0]
    run = training_rig(backbone, size, device, sizes).fit(steps, device)
    run()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    places = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                                 if "synchroniz" in str(w.message))
    lines = [f"{backbone} {size}, batch {sizes.train_batch}: {steps} steps of fit with one "
             f"read of the losses at the end; {sum(places.values())} synchronising calls.", ""]
    if places:
        lines += ["| place | calls |", "|---|---|"]
        lines += [f"| {place} | {n} |" for place, n in places.most_common()]
    return lines


def small_uploads(device, calls: int = 200) -> list[str]:
    """Host time per copy of 64 indices while the device works through ~0.2 s of queued
    matrix products; "waited": the host took longer than the queued work."""
    import torch

    from vfer import training

    big = torch.randn(4096, 4096, device=device)
    big @ big  # warm-up: the library's first call
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    big @ big
    end.record()
    torch.cuda.synchronize()
    products = max(1, int(200 / start.elapsed_time(end)))
    idx = np.arange(64, dtype=np.int64)
    ways = {"page-locked (training.upload)": lambda: training.upload(idx, device),
            "pageable, non_blocking": lambda: torch.from_numpy(idx).to(device, non_blocking=True)}
    lines = ["| copy of 64 int64 | host us per call | host waited for the queue |", "|---|---|---|"]
    for name, copy in ways.items():
        copy()
        torch.cuda.synchronize()
        queued = time.perf_counter()
        for _ in range(products):
            big @ big
        begin = time.perf_counter()
        for _ in range(calls):
            copy()
        host = time.perf_counter() - begin
        torch.cuda.synchronize()
        drained = time.perf_counter() - queued
        lines.append(f"| {name} | {1e6 * host / calls:.1f} | "
                     f"{'yes' if host > 0.9 * (drained - (begin - queued)) else 'no'} |")
    return lines


def horn_schunck_parts(device, sizes: Sizes) -> list[str]:
    """ms per batch of 112 x 112 pairs: the whole call and its parts."""
    import torch

    from vfer import flow, runtime

    prev, nxt = textures(sizes.flow_pairs, 112)
    sync, compiled = synchronised(device), runtime.compiles_by_default(device)

    def upload():
        return tuple(torch.from_numpy(a).to(device).float() / 255.0 for a in (prev, nxt))

    a, b = upload()

    def solve():
        with torch.no_grad():
            return flow.horn_schunck_batch(a, b, flow._TorchOps, compiled=compiled)

    u, v = solve()
    uv = torch.stack([u, v], -1)
    parts = {"whole call (flow.horn_schunck)":
             lambda: flow.horn_schunck(prev, nxt, "torch", str(device), compiled),
             "upload and scaling": upload, "solver on resident tensors": solve,
             "flows back (runtime.to_host)": lambda: runtime.to_host(uv)}
    lines = [f"batch {sizes.flow_pairs} ({'compiled' if compiled else 'not compiled'})", "",
             "| part | ms per batch | pairs/s |", "|---|---|---|"]
    for name, fn in parts.items():
        t = best_time(fn, sizes.repeat, sync)
        lines.append(f"| {name} | {1e3 * t:.1f} | {sizes.flow_pairs / t:,.0f} |")
    return lines


def tvl1_schedules(device, sizes: Sizes) -> list[str]:
    """pairs/s of TV-L1 at 112 x 112 for each of SCHEDULES, and the device's busy share."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from vfer import flow, tvl1

    n = flow.pairs_per_batch("tvl1", "torch", str(device), (112, 112)) \
        if device.type == "cuda" else sizes.flow_pairs
    prev, nxt = textures(n, 112)
    sync, key = synchronised(device), device.type
    default = tvl1._SCHEDULE[key]
    run = lambda: tvl1.tvl1(prev, nxt, device=str(device))  # noqa: E731
    want = run()  # with compiled, the compilation
    lines = [f"batch {n}; the default schedule: a check every {default[0]} iterations, share "
             f"{default[1]}, read {default[2]} checks late", "",
             "| iterations between checks | share | checks late | pairs/s | flows |",
             "|---|---|---|---|---|"]
    try:
        for schedule in SCHEDULES:
            tvl1._SCHEDULE[key] = schedule
            t, got = best_time(run, 1, sync), run()
            same = "equal" if np.array_equal(got, want) else \
                f"differ (max {np.abs(got - want).max():.2g} px)"
            lines.append(f"| {schedule[0]} | {schedule[1]} | {schedule[2]} | {n / t:,.0f} "
                         f"| {same} |")
    finally:
        tvl1._SCHEDULE[key] = default
    if device.type == "cuda":
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            run()
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        busy = sum(e.self_device_time_total for e in prof.key_averages()) / 1e6
        lines += ["", f"Default schedule under the profiler: {wall:.2f} s, the device busy "
                      f"{100 * busy / wall:.0f}%."]
    return lines


def measure(device, sizes: Sizes, trained: list[tuple[str, int]]) -> list[str]:
    """Every section as markdown lines, each printed as it is measured; the training step of
    the networks ``trained``."""
    lines = ["## Training step, ms per step", "",
             "| network | bare | + normalisation | + augmentation | + batches from the store "
             "| fit |", "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for backbone, size in trained:
        lines += training_parts(backbone, size, device, sizes)
        print(lines[-1], flush=True)
    sections = [("fit's operations", lambda: fit_operations(device, sizes)),
                ("Horn-Schunck 112 x 112", lambda: horn_schunck_parts(device, sizes)),
                ("TV-L1 112 x 112, stopping checks", lambda: tvl1_schedules(device, sizes))]
    if device.type == "cuda":
        sections[1:1] = [("Where fit waits for the device", lambda: fit_syncs(device, sizes)),
                         ("Small host-to-device copies", lambda: small_uploads(device))]
    for title, fn in sections:
        try:
            found = fn()
        except Exception as exc:  # one section's failure must not lose the others' figures
            traceback.print_exc()
            found = [f"failed: {type(exc).__name__}: {exc}"]
        part = ["", f"## {title}", "", *found]
        print("\n".join(part), flush=True)
        lines += part
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check-on-cpu", action="store_true",
                    help="run every section that needs no CUDA on the CPU at tiny sizes, the "
                         "training step of small_cnn only (checks the script; writes nothing)")
    args = ap.parse_args(argv)
    import torch

    from vfer.runtime import set_threads

    if args.check_on_cpu:
        set_threads(1)
        measure(torch.device("cpu"), QUICK, TRAINED[:1])
        print("measured on the CPU; nothing written")
        return 0
    if not torch.cuda.is_available():
        print(f"profile-gpu: torch sees no CUDA device; nothing measured, {args.out} left as it is")
        return 0
    start, name = time.perf_counter(), torch.cuda.get_device_name(0)
    lines = measure(torch.device("cuda"), Sizes(), TRAINED)
    head = ["# Where the GPU time goes (issue 16)", "",
            f"`python -m benchmarks.profile_gpu` on {name} (torch {torch.__version__}, CUDA "
            f"{torch.version.cuda}), {time.strftime('%Y-%m-%d')}; "
            f"{(time.perf_counter() - start) / 60:.1f} minutes. What each section measures: "
            "the docstring of benchmarks/profile_gpu.py.", ""]
    args.out.write_text("\n".join(head + lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
