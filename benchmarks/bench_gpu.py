"""make bench-gpu: the GPU figures of issue 16 beside their targets, in benchmarks/GPU.md.

    .venv/bin/python -m benchmarks.bench_gpu [--out benchmarks/GPU.md]
    .venv/bin/python -m benchmarks.bench_gpu --check-on-cpu   # the script itself, tiny sizes

Where torch sees no CUDA device it says so and exits 0, writing nothing. On CUDA, each figure
is measured as the issue's table was (bfloat16 autocast, random uint8 inputs already at the
network's size), vfer's code path beside the bare model on tensors already on the GPU:

- extraction: ``features.segment_outputs`` (prefetch, pinned memory, normalisation on the
  device, features back on the host) against the network's forward passes in the same
  batches of 256 images on normalised tensors resident on the GPU (the same network object,
  channels-last as the stage sets it);
- training step: ``training.fit`` (batches gathered from a stored SampleSet, which fit keeps
  on the GPU, augmentation, forward, backward, optimizer and schedule steps; the loss is read
  back once, at the end) against
  forward + backward + optimizer steps of the same network on resident tensors, batch 64;
- Horn-Schunck and TV-L1 (torch) through ``flow.horn_schunck`` and ``tvl1.tvl1`` on uint8
  host images, transfers included, on smooth textures moved by small random affine motions;
  TV-L1 in the flow stage's batch (``flow.pairs_per_batch``); each fused by torch.compile as
  on CUDA by default (TV-L1's first call, compiling, timed apart) and, for comparison, one
  operation at a time;
- OpenCV Farneback and DualTVL1 on one CPU core of the same machine, and the torch TV-L1's
  known-motion accuracy on the GPU against OpenCV's (the tests' criterion, on CUDA). Where the
  GPU machine's OpenCV has no ``cv2.optflow`` (opencv-python without contrib), DualTVL1's rate
  and accuracy come from ``benchmarks/opencv_reference.json``, written on a machine that has it
  by ``--opencv-reference``; GPU.md names that machine's CPU beside those figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import REPO

OUT = REPO / "benchmarks" / "GPU.md"
REFERENCE = REPO / "benchmarks" / "opencv_reference.json"
KNOWN_MOTIONS = ("translation", "rotation")
#: How the torch flow solvers ran: compiled (the default on CUDA where Triton can
#: build, runtime.compiles_by_default) or not.
HOW = {True: "fused by torch.compile", False: "one operation at a time"}
#: (backbone, input side) of the networks of the targets.
NETWORKS = [("alexnet", 227), ("vgg16", 224), ("resnet50", 224), ("small_cnn", 128)]


@dataclass
class Figure:
    """One row of GPU.md: vfer's rate, the bare rate (if any) and whether the target is met."""

    what: str
    value: float
    unit: str
    bare: float | None = None
    target: str = ""
    met: bool | None = None


@dataclass
class Sizes:
    """How much each measurement runs (smaller with --check-on-cpu)."""

    length: int = 16  # segment length: images per segment at extraction
    extract_images: int = 256  # per batch
    extract_batches: int = 32
    train_batch: int = 64
    train_seconds: float = 2.0  # bare training time the number of steps is chosen for
    flow_pairs: int = 1024
    opencv_pairs: tuple[int, int] = (50, 3)  # Farneback, DualTVL1
    repeat: int = 3


QUICK = Sizes(length=2, extract_images=2, extract_batches=2, train_batch=2, train_seconds=0.0,
              flow_pairs=2, opencv_pairs=(2, 1), repeat=1)


def stream_model(backbone: str, size: int, sizes: Sizes) -> dict:
    """The plan's model of a frames stream with ``backbone`` at ``size`` (random weights)."""
    from vfer.config import load

    config = {"samples": "unused.tsv", "classes": ["a", "b", "c", "d", "e", "f"],
              "segments": {"length": sizes.length, "stride": sizes.length},
              "streams": {"s": {"input": "frames", "backbone": backbone, "size": size,
                                "batch_size": sizes.train_batch}},
              "experiments": [{"name": "s", "streams": ["s"]}]}
    return load(config).models["s"]


def synchronised(device) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def best_time(fn: Callable[[], object], repeat: int, sync: Callable[[], None]) -> float:
    """The fastest of ``repeat`` timed calls after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def extraction(backbone: str, size: int, device, sizes: Sizes) -> Figure:
    import torch

    from vfer import features, training
    from vfer.nets.network import Network

    model = stream_model(backbone, size, sizes)
    (branch,) = model["network"]["branches"]
    steps = branch["steps"]
    per_batch = max(1, sizes.extract_images // steps)  # segments of ``steps`` images
    network = training.channels_last(Network(model["network"], 6).to(device).eval())
    rng = np.random.default_rng(0)
    x = {"s": rng.integers(0, 256, (per_batch * sizes.extract_batches, steps, size, size, 3),
                           dtype=np.uint8)}
    resident = training.network_inputs({"s": x["s"][:per_batch]}, device)
    sync = synchronised(device)

    def bare():
        with torch.no_grad(), training.autocast(device):
            for _ in range(sizes.extract_batches):
                f, _ = network.features_and_logits(resident)
                f.float()

    images = per_batch * steps * sizes.extract_batches
    vfer_s = best_time(lambda: features.segment_outputs(network, x, device, per_batch, False),
                       sizes.repeat, sync)
    bare_s = best_time(bare, sizes.repeat, sync)
    return Figure(f"{backbone} {size} extraction (segment_outputs, batch {per_batch * steps})",
                  images / vfer_s, "images/s", images / bare_s, ">= 80% of bare",
                  bare_s / vfer_s >= 0.8)


class MemorySource:
    """The InputSource interface over in-memory uint8 segments (S x T x H x W x 3 per video)."""

    vector, flow_x = False, False

    def __init__(self, videos: dict[str, np.ndarray]):
        self.videos_ = videos

    def videos(self) -> list[str]:
        return sorted(self.videos_)

    def index(self, video: str) -> np.ndarray:
        s, t = self.videos_[video].shape[:2]
        return np.arange(s * t).reshape(s, t)

    def items(self, video: str, index) -> np.ndarray:
        flat = self.videos_[video].reshape((-1,) + self.videos_[video].shape[2:])
        return flat[np.asarray(index)]

    def zero(self, video: str, index) -> None:
        return None


@dataclass
class Rig:
    """A frames stream's network with its optimizer, a stored training set of random videos
    and one resident batch (normalised ``x``, labels ``y``), as bench-gpu trains it."""

    network: object
    opt: object
    loss_fn: object
    cfg: dict
    samples: object
    x: dict
    y: object

    def loop(self, n: int, device, make: Callable[[], tuple]) -> Callable[[], None]:
        """``n`` forward + backward + optimizer steps, each on the (inputs, labels) of
        ``make()``."""
        from vfer import training

        def run():
            for _ in range(n):
                x, y = make()
                with training.autocast(device):
                    loss = self.loss_fn(self.network(x), y)
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
        return run

    def bare(self, n: int, device) -> Callable[[], None]:
        """``n`` steps on the resident batch."""
        return self.loop(n, device, lambda: (self.x, self.y))

    def fit(self, n: int, device) -> Callable[[], None]:
        """``training.fit`` for ``n`` steps, without validation."""
        from vfer import training

        def run():
            training.fit(self.network, self.samples, None,
                         {**self.cfg, "steps": n, "eval_every": n}, 0, device)
            self.network.train()
        return run


def training_rig(backbone: str, size: int, device, sizes: Sizes) -> Rig:
    import torch

    from vfer import training
    from vfer.nets.network import Network
    from vfer.nets.registry import OPTIMIZERS

    model = stream_model(backbone, size, sizes)
    (branch,) = model["network"]["branches"]
    batch = sizes.train_batch
    rng = np.random.default_rng(0)
    videos = {f"v{k}": rng.integers(0, 256, (4, branch["steps"], size, size, 3), dtype=np.uint8)
              for k in range(8)}
    labels = {v: k % 6 for k, v in enumerate(videos)}
    samples = training.SampleSet({"s": MemorySource(videos)}, {"s": size}, sorted(videos),
                                 labels, cache_mb=1e9)
    network = training.channels_last(Network(model["network"], 6).to(device).train())
    cfg = dict(model["train"])
    x = training.network_inputs(  # one image per sample, as a stream trains (sample_steps 1)
        {"s": rng.integers(0, 256, (batch, 1, size, size, 3), dtype=np.uint8)}, device)
    return Rig(network, OPTIMIZERS.build(cfg["optimizer"], network.parameters(), cfg),
               torch.nn.CrossEntropyLoss(), cfg, samples, x,
               torch.arange(batch, device=device) % 6)


def train_steps(rig: Rig, device, sizes: Sizes, sync: Callable[[], None]) -> int:
    """Steps per timed run: about ``sizes.train_seconds`` of bare training (at least 30)."""
    one = best_time(rig.bare(3, device), 1, sync) / 3
    return max(3 if sizes.train_seconds == 0 else 30, int(sizes.train_seconds / one))


def training_step(backbone: str, size: int, device, sizes: Sizes) -> Figure:
    rig, sync = training_rig(backbone, size, device, sizes), synchronised(device)
    batch = sizes.train_batch
    steps = train_steps(rig, device, sizes, sync)
    bare_s = best_time(rig.bare(steps, device), sizes.repeat, sync)
    vfer_s = best_time(rig.fit(steps, device), sizes.repeat, sync)
    return Figure(f"{backbone} {size} training step (fit, batch {batch}, {steps} steps)",
                  steps * batch / vfer_s, "images/s", steps * batch / bare_s,
                  ">= 75% of bare", bare_s / vfer_s >= 0.75)


def textures(n: int, side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n pairs (uint8, n x side x side) of smooth textures and the same moved by a random
    rotation (up to 2 degrees) and translation (up to 1.5 px)."""
    import cv2

    rng = np.random.default_rng(seed)
    bases = []
    for _ in range(min(n, 16)):
        img = np.zeros((side, side), np.float32)
        for sigma in (1.5, 3.0, 6.0):
            noise = rng.normal(size=(side, side)).astype(np.float32)
            img += cv2.GaussianBlur(noise, (0, 0), sigma) * sigma
        bases.append(((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8))
    prev = np.stack([bases[k % len(bases)] for k in range(n)])
    nxt = np.empty_like(prev)
    for k in range(n):
        m = cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), rng.uniform(-2, 2), 1.0)
        m[:, 2] += rng.uniform(-1.5, 1.5, 2)
        nxt[k] = cv2.warpAffine(prev[k], m, (side, side), flags=cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_REFLECT)
    return prev, nxt


def known_motions():
    """(kind, first image, second image, true flow) of a translated and a rotated 96 px
    texture (tests/test_tvl1.py's criterion)."""
    import cv2

    (prev,), _ = textures(1, 96, seed=1)
    ys, xs = np.mgrid[0:96, 0:96].astype(np.float64)
    pts = np.stack([xs, ys], -1)
    for kind, matrix in zip(KNOWN_MOTIONS, (np.float64([[1, 0, 1.3], [0, 1, -0.7]]),
                                            cv2.getRotationMatrix2D((47.5, 47.5), 2.0, 1.0))):
        nxt = cv2.warpAffine(prev, matrix, (96, 96), flags=cv2.INTER_CUBIC,
                             borderMode=cv2.BORDER_REFLECT)
        yield kind, prev, nxt, pts @ matrix[:, :2].T + matrix[:, 2] - pts


def epe(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Mean endpoint error away from an 8 px border."""
    return float(np.linalg.norm(estimate - truth, axis=-1)[8:-8, 8:-8].mean())


def opencv_reference(sizes: Sizes) -> dict:
    """OpenCV DualTVL1 on one CPU core of this machine: pairs/s per side and known-motion
    EPE, for a GPU machine whose OpenCV lacks cv2.optflow."""
    import cv2

    from vfer import flow

    cv2.setNumThreads(1)
    solver, rates = flow.tvl1_solver(), {}
    for side in (112, 227):
        prev, nxt = textures(sizes.opencv_pairs[1], side)
        t = best_time(lambda: [solver.calc(a, b, None) for a, b in zip(prev, nxt)], 1,
                      lambda: None)
        rates[str(side)] = len(prev) / t
    return {"cpu": cpu_name(), "opencv": cv2.__version__, "pairs_per_s": rates,
            "epe": {kind: epe(solver.calc(a, b, None), truth)
                    for kind, a, b, truth in known_motions()}}


def cpu_name() -> str:
    for line_ in Path("/proc/cpuinfo").read_text().splitlines():
        if line_.startswith("model name"):
            return line_.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def known_motion_epe(device, reference: dict) -> list[Figure]:
    """Torch TV-L1's mean EPE on ``device`` against the true flow, beside OpenCV's."""
    from vfer import tvl1

    rows = []
    for kind, prev, nxt, truth in known_motions():
        ours = epe(tvl1.tvl1(prev[None], nxt[None], device=str(device))[0], truth)
        theirs = reference["epe"][kind]
        rows.append(Figure(f"TV-L1 torch EPE on the known {kind} (OpenCV: {theirs:.4f} px"
                           f"{reference['where']})", ours, "px",
                           target="within 0.05 px of OpenCV", met=abs(ours - theirs) <= 0.05))
    return rows


def flows(device, sizes: Sizes, reference: dict) -> list[Figure]:
    import cv2

    from vfer import flow, runtime, tvl1

    sync, rows = synchronised(device), []
    cv2.setNumThreads(1)
    for side in (112, 227):
        n = sizes.opencv_pairs[0]
        prev, nxt = textures(n, side)
        t = best_time(lambda: [flow.farneback(a, b) for a, b in zip(prev, nxt)], 1, sync)
        rows.append(Figure(f"OpenCV Farneback {side}, one CPU core", n / t, "pairs/s"))
    opencv_tvl1 = {int(side): rate for side, rate in reference["pairs_per_s"].items()}
    for side, rate in opencv_tvl1.items():
        rows.append(Figure(f"OpenCV DualTVL1 {side}, one CPU core{reference['where']}", rate,
                           "pairs/s"))
    # on CUDA, compiled (the default there, first call timed apart) and for comparison not
    variants = [True, False] if runtime.compiles_by_default(device) else [False]
    for side, target in ((112, 10_000), (227, None)):
        prev, nxt = textures(sizes.flow_pairs, side)
        for compiled in variants:
            rate = sizes.flow_pairs / best_time(
                lambda: flow.horn_schunck(prev, nxt, "torch", str(device), compiled),
                sizes.repeat, sync)
            default = target and compiled == variants[0]
            rows.append(Figure(f"Horn-Schunck torch {side}, batch {sizes.flow_pairs} "
                               f"({HOW[compiled]})", rate, "pairs/s",
                               target=f">= {target:,} pairs/s" if default else "",
                               met=rate >= target if default else None))
    for side, target in ((112, 1000), (227, 300)):
        n = flow.pairs_per_batch("tvl1", "torch", str(device), (side, side)) \
            if device.type == "cuda" else sizes.flow_pairs
        prev, nxt = textures(n, side)
        for compiled in variants:
            run = lambda k=n: tvl1.tvl1(prev[:k], nxt[:k], device=str(device),  # noqa: E731
                                        compiled=compiled)
            start = time.perf_counter()
            run(3)  # warm-up, and with compiled the compilation (3 pairs: a dynamic batch)
            sync()
            first = time.perf_counter() - start
            rate = n / best_time(run, 1, sync)
            default = compiled == variants[0]
            rows.append(Figure(f"TV-L1 torch {side}, batch {n} ({HOW[compiled]})", rate,
                               "pairs/s", target=f">= {target:,} pairs/s" if default else "",
                               met=rate >= target if default else None))
            if compiled:
                rows.append(Figure(f"TV-L1 torch {side}: first call on 3 pairs, compilation "
                                   "included", first, "s"))
            if default:
                rows.append(Figure(f"TV-L1 torch {side} / OpenCV DualTVL1 on one CPU core",
                                   rate / opencv_tvl1[side], "x", target=">= 300 x",
                                   met=rate / opencv_tvl1[side] >= 300))
    return rows + known_motion_epe(device, reference)


def measure(device, sizes: Sizes, reference: dict) -> list[Figure]:
    """Every figure on ``device``, printed as it is measured; ``reference``: OpenCV DualTVL1's
    figures (``opencv_reference`` plus a ``where`` note)."""
    rows: list[Figure] = []
    steps = [(extraction, n) for n in NETWORKS] + [(training_step, n) for n in NETWORKS]
    for fn, (backbone, size) in steps:
        rows.append(fn(backbone, size, device, sizes))
        print(line(rows[-1]), flush=True)
    for row in flows(device, sizes, reference):
        rows.append(row)
        print(line(row), flush=True)
    return rows


def fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def line(r: Figure) -> str:
    bare = "" if r.bare is None else f"{fmt(r.bare)} {r.unit}"
    share = "" if r.bare is None else f"{100 * r.value / r.bare:.0f}%"
    met = "" if r.met is None else ("yes" if r.met else "no")
    return f"| {r.what} | {fmt(r.value)} {r.unit} | {bare} | {share} | {r.target} | {met} |"


def markdown(rows: list[Figure], device_name: str, seconds: float) -> str:
    import torch

    judged = [r for r in rows if r.met is not None]
    lines = ["# vfer on a GPU (issue 16)", "",
             f"`make bench-gpu` on {device_name} (torch {torch.__version__}, CUDA "
             f"{torch.version.cuda}), {platform.machine()} host, {time.strftime('%Y-%m-%d')}; "
             f"{seconds / 60:.1f} minutes. How each figure is measured: the docstring of "
             "benchmarks/bench_gpu.py.", "",
             "| what | vfer's code path | bare (tensors already on the GPU) | vfer / bare | "
             "target | met |", "|---|---|---|---|---|---|"]
    lines += [line(r) for r in rows]
    lines += ["", f"{sum(r.met for r in judged)} targets met, "
                  f"{sum(not r.met for r in judged)} missed."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check-on-cpu", action="store_true",
                    help="run every measurement on the CPU at tiny sizes and print the table "
                         "(checks the script; writes nothing)")
    ap.add_argument("--opencv-reference", action="store_true",
                    help=f"measure OpenCV DualTVL1 on one core of this CPU into {REFERENCE.name} "
                         "(for a GPU machine whose OpenCV has no cv2.optflow)")
    args = ap.parse_args(argv)
    import cv2
    import torch

    from vfer.runtime import set_threads

    if args.opencv_reference:
        REFERENCE.write_text(json.dumps(opencv_reference(Sizes()), indent=1) + "\n")
        print(f"wrote {REFERENCE}")
        return 0
    if not (args.check_on_cpu or torch.cuda.is_available()):
        print("bench-gpu: torch sees no CUDA device; nothing measured, "
              f"{args.out} left as it is")
        return 0
    sizes = QUICK if args.check_on_cpu else Sizes()
    if hasattr(cv2, "optflow"):
        reference = {**opencv_reference(sizes), "where": ""}
    elif REFERENCE.exists():
        reference = json.loads(REFERENCE.read_text())
        reference["where"] = f"; measured on {reference['cpu']}, OpenCV {reference['opencv']}"
    else:
        print(f"bench-gpu: this OpenCV ({cv2.__version__}) has no cv2.optflow and "
              f"{REFERENCE} is missing: run `python -m benchmarks.bench_gpu --opencv-reference` "
              "where opencv-contrib-python is installed", file=sys.stderr)
        return 2
    if args.check_on_cpu:
        set_threads(1)
        rows = measure(torch.device("cpu"), QUICK, reference)
        print(f"{len(rows)} figures measured on the CPU; nothing written")
        return 0
    start = time.perf_counter()
    name = torch.cuda.get_device_name(0)
    print(f"bench-gpu on {name}", flush=True)
    rows = measure(torch.device("cuda"), Sizes(), reference)
    args.out.write_text(markdown(rows, name, time.perf_counter() - start))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
