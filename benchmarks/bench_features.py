"""Feature stages against their kernel floors, with the demo's spatial stream:

- train: train_model for fold 0 (read and resize the crops, batches, augmentation, optimizer
  steps, validation, early stopping, saving) against the same number of forward + backward +
  optimizer steps and validation forward passes on tensors of the same shapes;
- extract: extract_model with the fold's network (read, resize, forward, HDF5 output) against
  the forward passes alone on the same number of segments in the same batches;

and the forward rate of every backbone at its input size. One thread, as the rules run (on
CUDA: the GPU of the machine)."""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import Row, demo_config, demo_plan, shard_paths, timed
from vfer import features, training
from vfer.folds import read_folds
from vfer.inputs import InputSource
from vfer.nets.backbones import build_backbone
from vfer.nets.network import Network
from vfer.nets.registry import BACKBONES, OPTIMIZERS
from vfer.runtime import reuse_freed_memory, select_device, set_threads

TARGET = 1.2
BACKBONE_RATES = [("small_cnn", "fc"), ("alexnet", "fc7"), ("resnet18", "pool"),
                  ("resnet50", "pool"), ("vgg16", "fc6"), ("c3d", "fc")]


def images(*shape: int, device) -> torch.Tensor:
    """Random (..., 3, H, W) images in the memory format the stages give the networks
    (training.network_inputs): channels-last, i.e. a permuted (..., H, W, 3) array."""
    *lead, c, h, w = shape
    return torch.rand(*lead, h, w, c, device=device).movedim(-1, -3)


def bare_training(model: dict, n_classes: int, info: dict, device) -> None:
    """The torch calls of a training run: its steps and validation passes, on random tensors,
    with the network and images in the stage's memory formats."""
    cfg = model["train"]
    network = training.channels_last(Network(model["network"], n_classes).to(device).train())
    opt = OPTIMIZERS.build(cfg["optimizer"], network.parameters(), cfg)
    loss_fn = nn.CrossEntropyLoss()
    (branch,) = model["network"]["branches"]
    side, batch = branch["size"], cfg["batch_size"]
    x = {branch["name"]: images(batch, cfg["sample_steps"] or branch["steps"], 3, side, side,
                                device=device)}
    y = torch.randint(0, n_classes, (batch,), device=device)
    for _ in range(info["steps_run"]):
        loss = loss_fn(network(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    val = images(info["validation_segments"], branch["steps"], 3, side, side, device=device)
    with torch.no_grad():
        network.eval()
        for _ in range(len(info["val_loss"])):
            for i in range(0, len(val), batch):
                network({branch["name"]: val[i:i + batch]}).float().cpu()


def bare_forward(model: dict, n_classes: int, segments: int, device) -> None:
    """The forward passes of an extraction: its segments in the stage's batches (which span
    videos) and memory formats, the features and probabilities back on the host."""
    network = training.channels_last(Network(model["network"], n_classes).to(device).eval())
    (branch,) = model["network"]["branches"]
    side, steps = branch["size"], branch["steps"]
    per_batch = max(1, features.EXTRACT_PIXELS.get(device.type, 1 << 19) // (side * side * steps))
    x = images(min(per_batch, segments), steps, 3, side, side, device=device)
    with torch.no_grad():
        for i in range(0, segments, per_batch):
            f, logits = network.features_and_logits({branch["name"]: x[:min(per_batch,
                                                                            segments - i)]})
            f.float().cpu(), torch.softmax(logits.float(), dim=1).cpu()


def forward_rate(name: str, tap: str, device, batch: int) -> float:
    """Images (clips for c3d) per second of the bare forward pass at the backbone's input size."""
    meta = BACKBONES.meta(name)
    model = build_backbone(name, 6).to(device).eval()
    side = meta["input_size"]
    shape = (batch, 3, 16, side, side) if meta.get("clip") else (batch, 3, side, side)
    x = torch.randn(*shape, device=device)
    with torch.no_grad():
        model.tap(x, [tap])  # warm-up
        seconds = min(timed(model.tap, x, [tap]) for _ in range(3))
    return batch / seconds


def measure(run: Path, backbones: bool = True, repeat: int = 2) -> list[Row]:
    config, plan = demo_config(), demo_plan()
    classes = config["classes"]
    model = plan.models["spatial"]
    set_threads(1)
    reuse_freed_memory()  # as the train and extract rules' jobs do
    device = select_device(config["device"])
    shard_paths(run)  # the run has finished
    shards = {"spatial": [{"faces": str(p), "segments": str(s)} for p, s in zip(
        sorted((run / "results/faces").glob("*.h5")),
        sorted((run / "results/segments").glob("*.h5")))]}
    folds = read_folds(str(run / "results/folds.tsv"))
    # warm-up: torch's first operator calls (once per process, in each train job's start-up)
    bare_training(model, len(classes), {"steps_run": 1, "validation_segments": 0,
                                        "val_loss": []}, device)
    with InputSource("frames", shards["spatial"]) as src:
        segments = sum(len(src.index(v)) for v in src.videos())
        per_video = {v: len(src.index(v)) for v in src.videos()}
    train_s = extract_s = train_bare = extract_bare = float("inf")
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        model_out, info_out = str(Path(tmp) / "m.pt"), str(Path(tmp) / "m.json")
        for _ in range(repeat):  # interleaved, the best of each: this machine's speed drifts
            train_s = min(train_s, timed(training.train_model, model, shards, folds, 0, classes,
                                         device, model_out, info_out))
            info = json.loads(Path(info_out).read_text())
            info["validation_segments"] = sum(per_video[v] for v in info["validation_videos"])
            train_bare = min(train_bare, timed(bare_training, model, len(classes), info, device))
            extract_s = min(extract_s, timed(features.extract_model, model, shards, classes,
                                             device, str(Path(tmp) / "f.h5"), {}, model_out,
                                             info_out))
            extract_bare = min(extract_bare, timed(bare_forward, model, len(classes),
                                                   segments, device))
    hardware = torch.cuda.get_device_name(0) if device.type == "cuda" else \
        f"CPU {platform.machine()}, 1 thread"
    (branch,) = model["network"]["branches"]
    net = f"{branch['backbone']} {branch['size']}px"
    images = segments * branch["steps"]
    rows = [Row("train", f"stage steps/s ({info['steps_run']} steps of "
                f"{model['train']['batch_size']}, {net}, {hardware})",
                info["steps_run"] / train_s, "steps/s"),
            Row("train", "bare torch steps/s (same steps and validation passes)",
                info["steps_run"] / train_bare, "steps/s"),
            Row("train", "stage / kernel floor (torch)", train_s / train_bare, "x", TARGET,
                "the stage also reads, resizes and augments crops, saves the model"),
            Row("extract", f"stage images/s ({images} images, {net})", images / extract_s,
                "images/s"),
            Row("extract", "bare forward images/s", images / extract_bare, "images/s"),
            Row("extract", "stage / kernel floor (torch forward)", extract_s / extract_bare, "x",
                TARGET, "the stage also reads and resizes crops, writes features")]
    if backbones:
        for name, tap in BACKBONE_RATES:
            rate = forward_rate(name, tap, device, 4 if name in ("vgg16", "c3d") else 16)
            meta = BACKBONES.meta(name)
            unit = "clips/s" if meta.get("clip") else "images/s"
            rows.append(Row("backbones", f"{name} forward at {meta['input_size']}px", rate,
                            unit))
    return rows
