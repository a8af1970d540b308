"""One fold of every trained network of each full-scale preset on a GPU: training and extraction
time and peak GPU memory, in benchmarks/PRESETS-GPU.md (issue 14).

    python -m benchmarks.bench_presets_gpu [PRESET ...] [--max-steps N] [--out FILE]
    python -m benchmarks.bench_presets_gpu --check-on-cpu [PRESET ...]   # the script itself

A preset is config/methods/<preset>.yaml (and its small variant merged over it, as Snakemake
merges several --configfile), with ``weights: torchvision`` replaced by random initialisation (the GPU machine
has no weight files; the cost of a step does not depend on the weights' values). Its stage
files are written with vfer.store's writers from smooth random uint8 images at the preset's
face size, in the layouts the stages give: segments by vfer.segments, flow pairs by
vfer.flow.video_pairs, the dynamic image of each segment by vfer.dynamic.video_sequences.
Then each network trained per fold is trained on the first fold (vfer.training.train_model,
as rule train does) with the preset's own settings, steps capped by --max-steps, and its
features are extracted (vfer.features.extract_model, as rule extract does): one model after
another in one process, with one CPU thread (the rules' ``threads: 1``), the CUDA context made
before any timing. Peak GPU memory is torch.cuda.max_memory_allocated, reset before training
and before extraction; a model that runs out of it is named in a note and the run goes on.
Each model's line is printed as it finishes and the table rewritten, so a run cut short keeps
what it measured.

Where torch sees no CUDA device it says so and exits 0, writing nothing. --check-on-cpu runs
the same path on the CPU with each preset's small variant merged in as well, a few videos and
2 steps per model, and prints the table without writing it.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import REPO

SYSTEMS = ("rfscnn", "mffcnn", "emotionalvlan", "stc_nlstm", "enhanced_convlstm")
OUT = REPO / "benchmarks" / "PRESETS-GPU.md"
GIB = 2 ** 30


@dataclass
class Sizes:
    """The synthetic dataset: ``videos`` of ``subjects`` subjects, ``frames`` frames each."""

    videos: int = 60
    subjects: int = 12  # stc_nlstm's 10 folds x 4 repetitions need 4 partitions: > 10 subjects
    frames: int = 48


CHECK = Sizes(videos=12, subjects=12, frames=20)


@dataclass
class Row:
    """One model's figures (peaks None on the CPU)."""

    preset: str
    model: str
    steps_run: int
    steps: int  # as capped by --max-steps
    configured: int  # the preset's
    batch: int
    train_s: float
    extract_s: float
    segments: int
    peak_train: int | None
    peak_extract: int | None


def merge(base: dict, over: dict) -> None:
    """Merge ``over`` into ``base`` in place as Snakemake merges config files."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def random_weights(node):
    """The config with every ``weights: torchvision`` set to null (random initialisation)."""
    if isinstance(node, dict):
        return {k: None if k == "weights" and v == "torchvision" else random_weights(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [random_weights(v) for v in node]
    return node


def preset_config(system: str, small: bool) -> dict:
    """The preset (and its small variant merged over it), with the demo's samples table as
    ``--config samples=`` would give it."""
    from vfer.config import read_yaml

    config = {"samples": str(REPO / "data" / "demo" / "samples.tsv")}
    files = [f"{system}.yaml"] + ([f"{system}-small.yaml"] if small else [])
    for name in files:
        merge(config, read_yaml(REPO / "config" / "methods" / name))
    return random_weights(config)


def samples(sizes: Sizes, classes: list[str]) -> pd.DataFrame:
    """Video k: subject k mod subjects, class (k div subjects) mod classes."""
    k = np.arange(sizes.videos)
    return pd.DataFrame({"video_id": [f"v{i:04d}" for i in k],
                         "subject": [f"s{i % sizes.subjects:03d}" for i in k],
                         "label": [classes[(i // sizes.subjects) % len(classes)] for i in k]})


def smooth(rng: np.random.Generator, n: int, size: tuple[int, int], channels: int) -> np.ndarray:
    """n smooth random fields (n x h x w x channels float32 in [0, 1]): uniform noise at an
    eighth of the size, enlarged bilinearly."""
    import cv2

    h, w = size
    low = rng.random((n, max(2, h // 8), max(2, w // 8), channels), dtype=np.float32)
    return np.stack([cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR) for x in low]
                    ).reshape(n, h, w, channels)


def images(rng: np.random.Generator, n: int, size: tuple[int, int]) -> np.ndarray:
    return (smooth(rng, n, size, 3) * 255).astype(np.uint8)


def write_stages(config: dict, plan, table: pd.DataFrame, frames: int, work: Path) -> dict:
    """Faces, segments, flow and dynamic files of ``table``'s videos in shards of the config's
    shard_size: {stage (faces, segments) or flow key or "<source>/<dynamic key>": [path per
    shard]}."""
    from vfer import dynamic, flow, segments
    from vfer.store import DynamicFile, FacesFile, FlowFile, SegmentsFile

    rng = np.random.default_rng(config["seed"])
    size = tuple(config["faces"]["size"])
    ids = list(table["video_id"])
    shards = [ids[i:i + config["shard_size"]] for i in range(0, len(ids), config["shard_size"])]
    paths: dict[str, list[str]] = {}
    for k, videos in enumerate(shards):
        def path(stage: str) -> str:
            file = work / stage / f"{k}.h5"
            file.parent.mkdir(parents=True, exist_ok=True)
            paths.setdefault(stage, []).append(str(file))
            return str(file)

        with FacesFile.create(path("faces"), {"method": "synthetic",
                                              "params": config["faces"]}) as out:
            for v in videos:  # every frame a detected face filling the crop, no landmarks
                box = np.tile(np.float32([0, 0, size[1], size[0]]), (frames, 1))
                out.write_video(v, images(rng, frames, size), box, np.ones(frames, np.float32),
                                np.full((frames, 2, 2), np.nan, np.float32),
                                np.full((frames, 478, 3), np.nan, np.float32),
                                np.ones(frames, bool), np.arange(frames, dtype=np.int32),
                                np.arange(frames, dtype=np.int32),
                                {"path": "synthetic", "decoded_frames": frames})
        segments.process_shard(paths["faces"][k], path("segments"), config["segments"], {})
        with SegmentsFile(paths["segments"][k]) as segs:
            for key, p in plan.flows.items():
                attrs = {"method": "synthetic", "params": p["params"], "bound": p["bound"],
                         "consecutive": p["consecutive"], "store_raw": p["store_raw"],
                         "backend": ["synthetic", None]}
                with FlowFile.create(path(key), attrs) as out:
                    for v in videos:
                        pairs, index = flow.video_pairs(segs.segment_index(v), frames,
                                                        p["consecutive"])
                        fields = (smooth(rng, len(pairs), size, 2) * 2 - 1) * p["bound"]
                        out.write_video(v, pairs, fields, index, p["store_raw"])
            for key, p in plan.dynamics.items():
                source = key.split("/")[0]
                flows = FlowFile(paths[p["flow_key"]][k]) if source == "flow" else None
                with FacesFile(paths["faces"][k]) as faces, DynamicFile.create(
                        path(key), {"method": "synthetic", "input": source, "params": p}) as out:
                    for v in videos:
                        seqs, chosen = dynamic.video_sequences(source, p, v, faces, segs, flows)
                        zero = None if flows is None else rng.uniform(0.4, 0.6, (len(seqs), 2))
                        out.write_video(v, images(rng, len(seqs), size), chosen, zero)
                if flows is not None:
                    flows.close()
    return paths


def model_shards(model: dict, paths: dict) -> dict:
    """{branch: [{stage: path} per shard]}, as rule train's inputs give them."""
    from vfer.nets.registry import INPUTS

    out = {}
    for branch, source in model["sources"].items():
        keys = {"faces": "faces", "segments": "segments", "flow": source["flow"],
                "dynamic": source["dynamic"]}
        stages = INPUTS.meta(source["input"])["stages"]
        out[branch] = [{s: paths[keys[s]][k] for s in stages}
                       for k in range(len(paths["faces"]))]
    return out


def run_model(system: str, config: dict, model: dict, configured: int, shards: dict,
              folds: pd.DataFrame, fold: int, device, work: Path) -> Row:
    """Train ``model`` on ``fold`` and extract its features; time both (``configured``: its
    steps before the cap)."""
    import torch

    from vfer import features, training
    from vfer.runtime import provenance
    from vfer.store import FeaturesFile

    cuda = device.type == "cuda"

    def lap(start: float) -> tuple[float, int | None]:
        """Seconds since ``start`` and the peak GPU memory since the last reset."""
        if not cuda:
            return time.perf_counter() - start, None
        torch.cuda.synchronize()
        seconds, peak = time.perf_counter() - start, torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        return seconds, peak

    base = work / "models" / model["name"]
    base.parent.mkdir(parents=True, exist_ok=True)
    weights, info, h5 = (f"{base}.pt", f"{base}.json", f"{base}.h5")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    record = training.train_model(model, shards, folds, fold, config["classes"], device, weights,
                                  info)
    train_s, peak_train = lap(start)
    start = time.perf_counter()
    features.extract_model(model, shards, config["classes"], device, h5,
                           provenance("extract", config, model), model_path=weights,
                           info_path=info)
    extract_s, peak_extract = lap(start)
    with FeaturesFile(h5) as f:
        segments = sum(len(f.scores(v)) for v in f.videos())
    return Row(system, model["name"], record["steps_run"], model["train"]["steps"], configured,
               model["train"]["batch_size"], train_s, extract_s, segments, peak_train,
               peak_extract)


def run_preset(system: str, small: bool, sizes: Sizes, max_steps: int | None, device,
               work: Path) -> Iterator[str | Row]:
    """A note on the preset's data first, then each model's row as it finishes (a note for a
    model that ran out of GPU memory)."""
    import torch

    from vfer.config import load
    from vfer.folds import assign_folds, evaluation_folds

    config = preset_config(system, small)
    plan = load(config)
    table = samples(sizes, config["classes"])
    protocol = config["protocol"]
    folds = assign_folds(table, protocol["name"], protocol["groups"], config["seed"],
                         protocol["folds"], protocol["repeats"])
    fold = evaluation_folds(folds)[0]
    start = time.perf_counter()
    paths = write_stages(config, plan, table, sizes.frames, work)
    written = time.perf_counter() - start
    trained = [m for m in plan.models.values()
               if m["kind"] == "network" and m["finetune"] == "per_fold"]
    h, w = config["faces"]["size"]
    seg = config["segments"]
    yield (f"{system}: faces {h} x {w}, segments of {seg['length']} frames ({seg['mode']}), "
           f"{len(trained)} networks trained on fold {fold} of {len(evaluation_folds(folds))} "
           f"({protocol['name']}); stage files written in {written:.0f} s")
    for model in trained:
        configured = model["train"]["steps"]
        model = copy.deepcopy(model)
        model["train"]["steps"] = min(configured, max_steps or configured)
        try:
            yield run_model(system, config, model, configured, model_shards(model, paths),
                            folds, fold, device, work)
        except torch.OutOfMemoryError as exc:
            yield f"{system} {model['name']}: out of GPU memory ({str(exc).splitlines()[0]})"


def gib(value: int | None) -> str:
    return "" if value is None else f"{value / GIB:.2f}"


def line(r: Row) -> str:
    return (f"| {r.preset} | {r.model} | {r.steps_run} of {r.steps} ({r.configured} "
            f"configured) | {r.batch} | {r.train_s:.1f} | {r.train_s / max(r.steps_run, 1):.3f} | "
            f"{r.extract_s:.1f} | "
            f"{r.segments / r.extract_s:,.0f} | {gib(r.peak_train)} | {gib(r.peak_extract)} |")


HEADER = ["| preset | model | steps run | batch | training s | "
          "training s per step | extraction s | extracted segments/s | peak GPU memory, "
          "training (GiB) | peak GPU memory, extraction (GiB) |",
          "|---|---|---|---|---|---|---|---|---|---|"]


def markdown(rows: list[Row], notes: list[str], device: str, command: str, sizes: Sizes,
             max_steps: int | None, seconds: float) -> str:
    import torch

    cap = f"capped at {max_steps} (`--max-steps`)" if max_steps is not None else \
        "as configured"
    lines = ["# One fold of each full-scale preset on a GPU (issue 14)", "",
             f"`{command}` on {device} (torch {torch.__version__}, CUDA {torch.version.cuda}), "
             f"{time.strftime('%Y-%m-%d')}; {seconds / 60:.1f} minutes in all. How it is "
             "measured: the docstring of benchmarks/bench_presets_gpu.py.", "",
             f"Synthetic stage files: {sizes.videos} videos of {sizes.subjects} subjects, "
             f"{sizes.frames} frames each (smooth random uint8 images at each preset's face "
             "size). **Weights were random**: `weights: torchvision` was replaced by random "
             "initialisation (no weight files on the GPU machine). Training uses each preset's "
             f"own settings (batch size, optimizer, validation, early stopping), steps {cap}; "
             "a run may stop earlier on its validation loss (`patience`).", ""]
    lines += [f"- {n}" for n in notes] + [""] + HEADER + [line(r) for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="*", default=list(SYSTEMS),
                    help=f"presets to run, of {', '.join(SYSTEMS)} (default: all five)")
    ap.add_argument("--out", type=Path, default=OUT, help="the markdown table to write")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="cap every model's training steps (default: its configured steps)")
    ap.add_argument("--videos", type=int, default=Sizes.videos)
    ap.add_argument("--subjects", type=int, default=Sizes.subjects)
    ap.add_argument("--frames", type=int, default=Sizes.frames, help="frames per video")
    ap.add_argument("--check-on-cpu", action="store_true",
                    help="run on the CPU with the small variants, a few videos and 2 steps per "
                         "model, and print the table (checks the script; writes nothing)")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.presets) - set(SYSTEMS))
    if unknown:
        ap.error(f"unknown preset(s) {unknown}; choose from {list(SYSTEMS)}")
    if args.max_steps is not None and args.max_steps < 1:
        ap.error("--max-steps must be at least 1")
    import torch

    from vfer.runtime import set_threads

    if not (args.check_on_cpu or torch.cuda.is_available()):
        print(f"bench-presets-gpu: torch sees no CUDA device; nothing measured, {args.out} "
              "left as it is")
        return 0
    check = args.check_on_cpu
    sizes = CHECK if check else Sizes(args.videos, args.subjects, args.frames)
    max_steps = 2 if check else args.max_steps
    device = torch.device("cpu" if check else "cuda")
    name = "the CPU" if check else torch.cuda.get_device_name(0)
    command = " ".join(["python -m benchmarks.bench_presets_gpu",
                        *(sys.argv[1:] if argv is None else argv)])
    set_threads(1)
    if not check:
        torch.zeros(1, device=device)  # the CUDA context, made once, before any timing
    print(f"bench-presets-gpu on {name}; weights random (no weight files)", flush=True)
    print("\n".join(HEADER), flush=True)
    rows, notes, start = [], [], time.perf_counter()
    for system in args.presets:
        with tempfile.TemporaryDirectory(prefix=f"vfer-{system}-") as tmp:
            for item in run_preset(system, check, sizes, max_steps, device, Path(tmp)):
                if isinstance(item, str):
                    notes.append(item)
                    print(item, flush=True)
                else:
                    rows.append(item)
                    print(line(item), flush=True)
                if not check:
                    args.out.write_text(markdown(rows, notes, name, command, sizes, max_steps,
                                                 time.perf_counter() - start))
    if check:
        print("\n" + markdown(rows, notes, name, command, sizes, max_steps,
                              time.perf_counter() - start))
        print(f"{len(rows)} models trained and extracted on the CPU; nothing written")
    else:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
