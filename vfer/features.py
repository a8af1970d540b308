"""Per-stream CNN features: fine-tune on the training subjects of a fold, extract for all videos.

A stream reads images from one stage's HDF5 files and a *grouping* that says which images
form each segment:

* ``frames``  faces ``/<video>/frames`` grouped by segments ``/<video>/segment_index``
* ``flow``    flow ``/<video>/images`` grouped by ``/<video>/segment_pairs``
* ``dynamic_rgb`` / ``dynamic_flow``: dynamic ``/<video>/images``, one image per segment (or
  window)

A segment's feature is the mean of its images' features (the seeds' average pooling).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from vfer.io import open_h5
from vfer.models import MEAN, STD

log = logging.getLogger(__name__)

STAGE_OF_INPUT = {"frames": "faces", "flow": "flow", "dynamic_rgb": "dynamic",
                  "dynamic_flow": "dynamic"}


@dataclass
class StreamVideo:
    images: np.ndarray  # N x h x w x 3 uint8, resized to the network input
    groups: np.ndarray  # S x k indices into images: the images of each segment


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1:3] == (size, size):
        return np.ascontiguousarray(images)
    return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])


def load_stream(kind: str, shards: Iterable[tuple[str, ...]], size: int,
                video_ids: set[str] | None = None) -> dict[str, StreamVideo]:
    """Read every video of the given shard files for one stream input kind.

    ``shards`` holds one tuple per shard: (faces, segments) for ``frames``, (flow,) for
    ``flow`` and (dynamic,) for the dynamic inputs. Only images used by a segment are kept.
    """
    out: dict[str, StreamVideo] = {}
    for files in shards:
        handles = [open_h5(files[0], STAGE_OF_INPUT[kind])]
        if kind == "frames":
            handles.append(open_h5(files[1], "segments"))
        try:
            for vid in handles[0]:
                if video_ids is not None and vid not in video_ids:
                    continue
                if kind == "frames":
                    groups = handles[1][vid]["segment_index"][()]
                    used, groups = np.unique(groups, return_inverse=True)
                    images = handles[0][vid]["frames"][()][used]
                    groups = groups.reshape(-1, handles[1][vid]["segment_index"].shape[1])
                elif kind == "flow":
                    images = handles[0][vid]["images"][()]
                    groups = handles[0][vid]["segment_pairs"][()]
                elif kind in ("dynamic_rgb", "dynamic_flow"):
                    images = handles[0][vid]["images"][()]
                    groups = np.arange(len(images))[:, None]
                else:
                    raise ValueError(f"unknown stream input {kind!r}")
                out[vid] = StreamVideo(_resize(images, size), groups.astype(np.int64))
        finally:
            for h in handles:
                h.close()
    return out


def shard_tuples(kind: str, inputs) -> list[tuple[str, ...]]:
    """Per-shard file tuples for ``load_stream`` from named input lists (faces, segments,
    flow or dynamic), e.g. a rule's ``snakemake.input``."""
    if kind == "frames":
        return list(zip(inputs.get("faces"), inputs.get("segments")))
    return [(p,) for p in inputs.get("flow" if kind == "flow" else "dynamic")]


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 N x h x w x 3 -> normalised float N x 3 x h x w."""
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def training_set(videos: dict[str, StreamVideo], labels: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """All images of the given videos with their video's label."""
    ids = [v for v in sorted(videos) if v in labels]
    if not ids:
        raise ValueError("no training videos with images for this stream")
    x = np.concatenate([videos[v].images for v in ids])
    y = np.concatenate([np.full(len(videos[v].images), labels[v]) for v in ids])
    return x, y.astype(np.int64)


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, steps: int, batch_size: int,
          lr: float, weight_decay: float, seed: int, device: torch.device) -> list[float]:
    """Fine-tune ``model`` with Adam on random mini-batches; returns the loss per step."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    y_all = torch.from_numpy(labels)
    losses = []
    for step in range(steps):
        idx = rng.integers(0, len(images), batch_size)
        x = to_tensor(images[idx], device)
        loss = loss_fn(model(x), y_all[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % max(1, steps // 10) == 0:
            log.info("step %d/%d loss %.4f", step + 1, steps, np.mean(losses[-max(1, steps // 10):]))
    model.eval()
    return losses


@torch.no_grad()
def extract(model: nn.Module, video: StreamVideo, device: torch.device,
            batch_size: int = 256) -> np.ndarray:
    """Segment features (S x D float32): the mean of each segment's image features."""
    model.to(device).eval()
    feats = []
    for i in range(0, len(video.images), batch_size):
        feats.append(model.features(to_tensor(video.images[i:i + batch_size], device)).float().cpu())
    per_image = torch.cat(feats).numpy()
    return per_image[video.groups].mean(axis=1).astype(np.float32)


def read_folds(path: str) -> "pd.DataFrame":
    """The folds table written by the folds rule (video_id, subject, label, fold)."""
    import pandas as pd

    return pd.read_csv(path, sep="\t", dtype={"video_id": str, "subject": str, "label": str})


def train_stream(kind: str, shards: list[tuple[str, ...]], folds_path: str, fold: int,
                 stream: dict, classes: list[str], seed: int, device: torch.device,
                 model_out: str, info_out: str) -> dict:
    """Fine-tune a stream's CNN on the training subjects of ``fold``; save weights and info."""
    import json

    from vfer.io import atomic_path, sha256_of
    from vfer.models import build

    folds = read_folds(folds_path)
    train_rows = folds[folds["fold"] != fold]
    class_index = {c: i for i, c in enumerate(classes)}
    labels = dict(zip(train_rows["video_id"], train_rows["label"].map(class_index)))
    videos = load_stream(kind, shards, stream["size"], set(labels))
    images, y = training_set(videos, labels)
    used = sorted(v for v in videos if v in labels)
    subjects = sorted(set(train_rows.loc[train_rows["video_id"].isin(used), "subject"]))
    log.info("fold %d: %d training images from %d videos of %d subjects", fold, len(images),
             len(used), len(subjects))
    torch.manual_seed(seed)
    model = build(stream["backbone"], len(classes), stream["size"])
    losses = train(model, images, y, stream["steps"], stream["batch_size"], stream["lr"],
                   stream["weight_decay"], seed, device)
    with atomic_path(model_out) as tmp:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
    info = {"fold": fold, "backbone": stream["backbone"], "input": kind,
            "initial_weights": "random", "train_videos": used, "train_subjects": subjects,
            "train_subjects_sha256": sha256_of(subjects), "train_images": int(len(images)),
            "final_loss": float(np.mean(losses[-10:])), "seed": seed}
    with atomic_path(info_out) as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    return info


def extract_stream(kind: str, shards: list[tuple[str, ...]], model_path: str, info_path: str,
                   stream_name: str, stream: dict, classes: list[str], device: torch.device,
                   out_path: str, provenance: dict) -> None:
    """Segment features of every video with one fold's model, to HDF5 with provenance."""
    import json

    from vfer.io import create_h5, file_sha256, write_array
    from vfer.models import build
    from vfer.runtime import progress

    info = json.loads(open(info_path).read())
    model = build(stream["backbone"], len(classes), stream["size"])
    model.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
    videos = load_stream(kind, shards, stream["size"])
    attrs = {"stream": stream_name, "input": kind, "backbone": stream["backbone"],
             "layer": "fc", "weights_sha256": file_sha256(model_path),
             "initial_weights": info["initial_weights"], "fold": info["fold"],
             "train_subjects": info["train_subjects"],
             "train_subjects_sha256": info["train_subjects_sha256"], **provenance}
    with create_h5(out_path, "features", attrs) as f:
        for video_id in progress(sorted(videos), f"features {stream_name}"):
            write_array(f.create_group(video_id), "features",
                        extract(model, videos[video_id], device))
