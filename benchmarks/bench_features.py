"""Feature stages against their kernel floors, with the demo's spatial stream:

- train: train_stream for fold 0 (read and resize the crops, batches, augmentation, Adam steps,
  validation, early stopping, saving) against the same number of forward + backward + Adam
  steps and validation forward passes on tensors of the same shapes;
- extract: extract_stream with the fold's model (read, resize, forward, HDF5 output) against
  the forward passes alone on the same number of images in the same batches;

and the forward rate of every backbone at its input size. One thread, as the rules run (on
CUDA: the GPU of the machine)."""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.common import Row, demo_config, shard_paths, timed
from vfer import features, models
from vfer.runtime import select_device, set_threads

TARGET = 1.2
BACKBONES = [("small_cnn", None), ("alexnet", "fc7"), ("resnet18", "pool"), ("resnet50", "pool"),
             ("vgg16", "fc6"), ("c3d", "fc")]


def bare_training(stream: dict, n_classes: int, info: dict, device) -> None:
    """The torch calls of a training run: its steps and validation passes, on random tensors."""
    model = models.build(stream["backbone"], n_classes, stream["size"]).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=stream["lr"],
                           weight_decay=stream["weight_decay"])
    loss_fn = nn.CrossEntropyLoss()
    side, batch = stream["size"], stream["batch_size"]
    x = torch.rand(batch, 3, side, side, device=device)
    y = torch.randint(0, n_classes, (batch,), device=device)
    for _ in range(info["steps_run"]):
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
    val = torch.rand(info["validation_images"], 3, side, side, device=device)
    with torch.no_grad():
        model.eval()
        for _ in range(len(info["val_loss"])):
            for i in range(0, len(val), batch):
                model(val[i:i + batch]).float().cpu()


def bare_forward(stream: dict, n_classes: int, images: int, device, layer: str) -> None:
    model = models.build(stream["backbone"], n_classes, stream["size"]).to(device).eval()
    batch = stream["batch_size"]
    x = torch.rand(batch, 3, stream["size"], stream["size"], device=device)
    with torch.no_grad():
        for i in range(0, images, batch):
            model.features_of(x[: min(batch, images - i)], layer).float().cpu()


def forward_rate(name: str, device, batch: int) -> float:
    """Images (clips for c3d) per second of the bare forward pass at the backbone's input size."""
    spec = models.SPECS[name]
    model = models.build(name, 6).to(device).eval()
    side = spec.input_size
    shape = (batch, 3, 16, side, side) if spec.segment else (batch, 3, side, side)
    x = torch.randn(*shape, device=device)
    layer = next(iter(spec.layers))
    with torch.no_grad():
        model.features_of(x, layer)  # warm-up
        seconds = min(timed(model.features_of, x, layer) for _ in range(3))
    return batch / seconds


def measure(run: Path, backbones: bool = True, repeat: int = 2) -> list[Row]:
    config = demo_config()
    classes = config["classes"]
    stream = {**config["streams"]["spatial"], "seed": config["seed"]}  # as the train rule
    set_threads(1)
    device = select_device(config["device"])
    shard_paths(run)  # the run has finished
    shards = [(str(p), str(s)) for p, s in zip(sorted((run / "results/faces").glob("*.h5")),
                                              sorted((run / "results/segments").glob("*.h5")))]
    folds = str(run / "results/folds.tsv")
    # warm-up: the first optimizer step imports torch._dynamo (~2 s, once per process; the
    # workflow pays it in each train job's start-up)
    bare_training(stream, len(classes), {"steps_run": 1, "validation_images": 0,
                                         "val_loss": []}, device)
    layer = stream["layer"] or next(iter(models.SPECS[stream["backbone"]].layers))
    with features.StreamReader("frames", shards) as reader:
        images = sum(reader.group(v)[0]["frames"].shape[0] for v in reader.video_ids())
    train_s = extract_s = train_bare = extract_bare = float("inf")
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        model_out, info_out = str(Path(tmp) / "m.pt"), str(Path(tmp) / "m.json")
        for _ in range(repeat):  # interleaved, the best of each: this machine's speed drifts
            train_s = min(train_s, timed(features.train_stream, "frames", shards, folds, 0,
                                         stream, classes, device, model_out, info_out))
            info = json.loads(Path(info_out).read_text())
            with features.StreamReader("frames", shards) as reader:
                info["validation_images"] = sum(len(np.unique(reader.groups(v)))
                                                for v in info["validation_videos"])
            train_bare = min(train_bare, timed(bare_training, stream, len(classes), info,
                                               device))
            extract_s = min(extract_s, timed(features.extract_stream, "frames", shards,
                                             "spatial", stream, classes, device,
                                             str(Path(tmp) / "f.h5"), {}, model_out, info_out))
            extract_bare = min(extract_bare, timed(bare_forward, stream, len(classes), images,
                                                   device, layer))
    hardware = torch.cuda.get_device_name(0) if device.type == "cuda" else \
        f"CPU {platform.machine()}, 1 thread"
    net = f"{stream['backbone']} {stream['size']}px"
    rows = [Row("train", f"stage steps/s ({info['steps_run']} steps of {stream['batch_size']}, "
                f"{net}, {hardware})", info["steps_run"] / train_s, "steps/s"),
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
        for name, _ in BACKBONES:
            rate = forward_rate(name, device, 4 if name in ("vgg16", "c3d") else 16)
            unit = "clips/s" if models.SPECS[name].segment else "images/s"
            rows.append(Row("backbones", f"{name} forward at {models.SPECS[name].input_size}px",
                            rate, unit))
    return rows
