"""Per-stream features to HDF5: CNN backbones fine-tuned per fold on training subjects only (or
used as loaded), and the CNN-free landmark and handcrafted streams.

A stream reads one stage's HDF5 files and a *grouping* saying which images form each segment:

* ``frames``        faces ``/<video>/frames`` grouped by segments ``/<video>/segment_index``
* ``flow``          flow ``/<video>/images`` grouped by ``/<video>/segment_pairs``
* ``dynamic_rgb``, ``dynamic_flow``: dynamic ``/<video>/images``, one per segment (or window)
* ``landmarks``     faces ``/<video>/landmarks`` with the segments

An image backbone's segment feature is the mean of its images' features (the seeds' average
pooling); a segment backbone (c3d) sees the segment's images as one clip.

Fine-tuning (``finetune: per_fold``) trains on the training subjects of the fold, keeps
``val_fraction`` of those subjects apart for early stopping, and extracts every video with the
best model. Everything is seeded; on the CPU the same run gives identical features.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
from torch import nn

from vfer import descriptors
from vfer.folds import read_folds
from vfer.io import atomic_path, create_h5, file_sha256, open_h5, sha256_of, write_array
from vfer.models import MEAN, SPECS, STD, build, load_weights
from vfer.runtime import progress

log = logging.getLogger(__name__)

INPUT_STAGE = {"frames": "faces", "flow": "flow", "dynamic_rgb": "dynamic",
               "dynamic_flow": "dynamic", "landmarks": "faces"}
#: Backbones that are not CNNs: computed directly, never trained.
DESCRIPTORS = ("landmarks", "hog")
#: Inputs whose first channel is a horizontal flow: a horizontal flip negates it.
FLOW_INPUTS = ("flow", "dynamic_flow")


def shard_tuples(kind: str, inputs) -> list[tuple[str, ...]]:
    """Per-shard file tuples from named input lists (faces, segments, flow or dynamic), e.g. a
    rule's ``snakemake.input``."""
    if kind in ("frames", "landmarks"):
        return list(zip(inputs.get("faces"), inputs.get("segments")))
    return [(p,) for p in inputs.get("flow" if kind == "flow" else "dynamic")]


class StreamReader:
    """Random access to one stream's images (uint8, as stored) across shard files."""

    def __init__(self, kind: str, shards: list[tuple[str, ...]]):
        if kind not in INPUT_STAGE:
            raise ValueError(f"unknown stream input {kind!r}")
        self.kind = kind
        self._files, self._video = [], {}
        for files in shards:
            main = open_h5(files[0], INPUT_STAGE[kind])
            segs = open_h5(files[1], "segments") if kind in ("frames", "landmarks") else None
            self._files.append((main, segs))
            for vid in main:
                self._video[vid] = len(self._files) - 1

    def video_ids(self) -> list[str]:
        return sorted(self._video)

    def groups(self, vid: str) -> np.ndarray:
        """S x k indices into the video's images: the images of each segment."""
        main, segs = self._files[self._video[vid]]
        if self.kind in ("frames", "landmarks"):
            return segs[vid]["segment_index"][()].astype(np.int64)
        if self.kind == "flow":
            return main[vid]["segment_pairs"][()].astype(np.int64)
        return np.arange(main[vid]["images"].shape[0])[:, None]

    def read(self, vid: str, index: np.ndarray | None = None) -> np.ndarray:
        """The video's images (all, or ``index``; any order, repeats allowed)."""
        main, _ = self._files[self._video[vid]]
        data = main[vid]["frames" if self.kind == "frames" else "images"]
        if index is None:
            return data[()]
        index = np.asarray(index)
        unique, inverse = np.unique(index, return_inverse=True)
        return data[unique][inverse]

    def group(self, vid: str):
        """The HDF5 groups of a video: (stage group, segments group or None)."""
        main, segs = self._files[self._video[vid]]
        return main[vid], None if segs is None else segs[vid]

    def close(self) -> None:
        for main, segs in self._files:
            main.close()
            if segs is not None:
                segs.close()

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 images (N x h x w x 3) to size x size (area when shrinking)."""
    if images.shape[1:3] == (size, size):
        return np.ascontiguousarray(images)
    shrink = images.shape[1] > size
    return np.stack([cv2.resize(im, (size, size),
                                interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
                     for im in images])


def to_unit(images: np.ndarray, device) -> torch.Tensor:
    """uint8 (N x h x w x 3) or clips (N x T x h x w x 3) -> float in [0, 1], channels first:
    (N, 3, h, w) or (N, 3, T, h, w)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).float().div_(255.0)
    return x.permute(0, 3, 1, 2) if x.ndim == 4 else x.permute(0, 4, 1, 2, 3)


def normalise(x: torch.Tensor) -> torch.Tensor:
    shape = (1, 3) + (1,) * (x.ndim - 2)
    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype).view(shape)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype).view(shape)
    return (x - mean) / std


def to_tensor(images: np.ndarray, device="cpu") -> torch.Tensor:
    """uint8 images -> normalised network input."""
    return normalise(to_unit(images, device))


def augment(x: torch.Tensor, generator: torch.Generator, flip: bool, rotate: float,
            crop: float, negate_x: bool) -> torch.Tensor:
    """Random horizontal flips (negating the x-flow channel for flow inputs), rotations up to
    ``rotate`` degrees and crops of ``crop``..1 of the side, per sample (the same for all frames
    of a clip). Flow vectors are not rotated: a few degrees change them by a few percent."""
    n = x.shape[0]
    u = torch.rand(n, 5, generator=generator)
    if flip:
        flipped = u[:, 0] < 0.5
        if flipped.any():
            f = x[flipped].flip(-1)
            if negate_x:
                f[:, 0] = 1.0 - f[:, 0]
            x = x.clone()
            x[flipped] = f
    if rotate > 0 or crop < 1:
        angle = torch.deg2rad((u[:, 1] * 2 - 1) * rotate)
        scale = crop + (1 - crop) * u[:, 2]
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = scale * torch.cos(angle), -scale * torch.sin(angle)
        theta[:, 1, 0], theta[:, 1, 1] = scale * torch.sin(angle), scale * torch.cos(angle)
        theta[:, 0, 2] = (u[:, 3] * 2 - 1) * (1 - scale)  # crop position
        theta[:, 1, 2] = (u[:, 4] * 2 - 1) * (1 - scale)
        flat = x.reshape(n, -1, *x.shape[-2:])
        grid = nn.functional.affine_grid(theta.to(x.device, x.dtype), list(flat.shape),
                                         align_corners=False)
        flat = nn.functional.grid_sample(flat, grid, padding_mode="border", align_corners=False)
        x = flat.reshape(x.shape)
    return x


class Samples:
    """Training or validation samples: (video, image) for image backbones, (video, segment)
    for segment backbones, with their labels; preloaded when they fit in ``cache_mb``."""

    def __init__(self, reader: StreamReader, videos: list[str], labels: dict[str, int],
                 size: int, segment: bool, cache_mb: float):
        self.reader, self.size, self.segment = reader, size, segment
        self.items, self.groups = [], {}
        for vid in videos:
            g = reader.groups(vid)
            self.groups[vid] = g
            units = range(len(g)) if segment else np.unique(g)
            self.items += [(vid, int(i)) for i in units]
        self.labels = np.array([labels[v] for v, _ in self.items], np.int64)
        self._cache = None
        if not self.items:
            return
        per_item = size * size * 3 * (self.groups[videos[0]].shape[1] if segment else 1)
        if len(self.items) * per_item <= cache_mb * 2 ** 20:
            self._cache = self._load(np.arange(len(self.items)))

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, idx: np.ndarray) -> np.ndarray:
        out = [None] * len(idx)
        by_video: dict[str, list[int]] = {}
        for pos, k in enumerate(idx):
            by_video.setdefault(self.items[k][0], []).append(pos)
        for vid, positions in by_video.items():
            units = np.array([self.items[idx[p]][1] for p in positions])
            if self.segment:
                clips = self.groups[vid][units]
                images = resize(self.reader.read(vid, clips.ravel()), self.size)
                images = images.reshape(clips.shape + images.shape[1:])
            else:
                images = resize(self.reader.read(vid, units), self.size)
            for p, im in zip(positions, images):
                out[p] = im
        return np.stack(out)

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = self._cache[idx] if self._cache is not None else self._load(idx)
        return images, self.labels[idx]


def split_validation(subjects: list[str], fraction: float, seed: int) -> tuple[set, set]:
    """Training subjects split into (fit, validation): ``fraction`` of them (at least one,
    none if only one subject) for early stopping; seeded."""
    subjects = sorted(set(subjects))
    k = int(round(fraction * len(subjects)))
    k = min(max(k, 1), len(subjects) - 1) if fraction > 0 and len(subjects) > 1 else 0
    order = np.random.default_rng(seed).permutation(len(subjects))
    val = {subjects[i] for i in order[:k]}
    return set(subjects) - val, val


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def train(model: nn.Module, train_set: Samples, val_set: Samples | None, cfg: dict,
          negate_x: bool, seed: int, device: torch.device) -> dict:
    """Fine-tune with Adam on random mini-batches; with a validation set, evaluate every
    ``eval_every`` steps, keep the best model and stop after ``patience`` evaluations without
    improvement. Returns the training history."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    loss_fn = nn.CrossEntropyLoss()
    aug = cfg["augment"]
    every = cfg["eval_every"] or max(1, cfg["steps"] // 10)
    history = {"loss": [], "val_loss": [], "best_step": None}
    best, best_loss, waited = None, np.inf, 0
    for step in range(cfg["steps"]):
        images, y = train_set.batch(rng.integers(0, len(train_set), cfg["batch_size"]))
        x = augment(to_unit(images, device), gen, aug["flip"], aug["rotate"], aug["crop"], negate_x)
        with _autocast(device):
            loss = loss_fn(model(normalise(x)), torch.from_numpy(y).to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history["loss"].append(loss.item())
        if (step + 1) % every and step + 1 != cfg["steps"]:
            continue
        recent = float(np.mean(history["loss"][-every:]))
        if val_set is None or not len(val_set):
            log.info("step %d/%d loss %.4f", step + 1, cfg["steps"], recent)
            continue
        val_loss = evaluate_loss(model, val_set, device, cfg["batch_size"])
        history["val_loss"].append((step + 1, val_loss))
        log.info("step %d/%d loss %.4f validation loss %.4f", step + 1, cfg["steps"], recent, val_loss)
        if val_loss < best_loss - 1e-4:
            best_loss, waited, history["best_step"] = val_loss, 0, step + 1
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if waited >= cfg["patience"]:
                log.info("early stop: no improvement in %d evaluations", waited)
                break
        model.train()
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    return history


@torch.no_grad()
def evaluate_loss(model: nn.Module, samples: Samples, device: torch.device, batch: int) -> float:
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(samples), batch):
        images, y = samples.batch(np.arange(i, min(i + batch, len(samples))))
        with _autocast(device):
            logits = model(to_tensor(images, device))
        total += nn.functional.cross_entropy(logits.float(), torch.from_numpy(y).to(device),
                                             reduction="sum").item()
        n += len(y)
    return total / max(n, 1)


@torch.no_grad()
def segment_features(model: nn.Module, images: np.ndarray, groups: np.ndarray, layer: str,
                     segment: bool, device: torch.device, batch_size: int = 256) -> tuple[np.ndarray, float]:
    """Features of each segment (S x D float32) and the seconds spent in the forward pass.

    Image backbones: the mean of the segment's image features; segment backbones: one clip.
    """
    model.eval()
    if segment:
        inputs, n = images[groups], len(groups)
    else:
        inputs, n = images, len(images)
    feats, forward = [], 0.0
    for i in range(0, n, batch_size):
        x = to_tensor(inputs[i:i + batch_size], device)
        start = time.perf_counter()
        with _autocast(device):
            f = model.features_of(x, layer).float()
        if device.type == "cuda":
            torch.cuda.synchronize()
        forward += time.perf_counter() - start
        feats.append(f.cpu())
    out = torch.cat(feats).numpy()
    if not segment:
        out = out[groups].mean(axis=1)
    return out.astype(np.float32), forward


def initial_model(stream: dict, classes: list[str]) -> tuple[nn.Module, dict]:
    """The backbone with its configured initial weights (a file, or random: logged)."""
    torch.manual_seed(stream["seed"])
    model = build(stream["backbone"], len(classes), stream["size"])
    if stream.get("weights"):
        info = load_weights(model, stream["weights"], SPECS[stream["backbone"]].head)
        log.info("initial weights %s (sha256 %s), class layer %s", info["path"], info["sha256"],
                 "loaded" if info["head_loaded"] else "re-initialised")
        return model, {"initial_weights": info["path"], "initial_weights_sha256": info["sha256"]}
    log.warning("stream backbone %s starts from random initialisation (weights: null)",
                stream["backbone"])
    return model, {"initial_weights": "random", "initial_weights_sha256": "random"}


def train_stream(kind: str, shards: list[tuple[str, ...]], folds_path: str, fold: int,
                 stream: dict, classes: list[str], device: torch.device, model_out: str,
                 info_out: str) -> dict:
    """Fine-tune a stream's backbone on the training subjects of ``fold``; save the weights
    (torchvision key format) and a JSON record of exactly what it was trained on."""
    folds = read_folds(folds_path)
    train_rows = folds[folds["fold"] != fold]
    class_index = {c: i for i, c in enumerate(classes)}
    spec = SPECS[stream["backbone"]]
    with StreamReader(kind, shards) as reader:
        present = set(reader.video_ids())
        rows = train_rows[train_rows["video_id"].isin(present)]
        if rows.empty:
            raise ValueError(f"fold {fold}: no training video has {kind} images")
        fit_subjects, val_subjects = split_validation(list(rows["subject"]), stream["val_fraction"],
                                                      stream["seed"] + fold)
        labels = dict(zip(rows["video_id"], rows["label"].map(class_index)))
        fit_ids = sorted(rows.loc[rows["subject"].isin(fit_subjects), "video_id"])
        val_ids = sorted(rows.loc[rows["subject"].isin(val_subjects), "video_id"])
        fit = Samples(reader, fit_ids, labels, stream["size"], spec.segment, stream["cache_mb"])
        val = Samples(reader, val_ids, labels, stream["size"], spec.segment, stream["cache_mb"]) \
            if val_ids else None
        log.info("fold %d: %d training samples from %d videos (%d subjects), %d validation "
                 "samples from %d videos (%d subjects)", fold, len(fit), len(fit_ids),
                 len(fit_subjects), 0 if val is None else len(val), len(val_ids), len(val_subjects))
        model, init = initial_model(stream, classes)
        history = train(model, fit, val, stream, kind in FLOW_INPUTS, stream["seed"] + fold, device)
    with atomic_path(model_out) as tmp:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
    subjects = sorted(fit_subjects | val_subjects)
    info = {"fold": fold, "backbone": stream["backbone"], "input": kind, **init,
            "train_videos": fit_ids, "validation_videos": val_ids,
            "train_subjects": subjects, "train_subjects_sha256": sha256_of(subjects),
            "train_videos_sha256": sha256_of(fit_ids + val_ids), "steps_run": len(history["loss"]),
            "best_step": history["best_step"], "final_loss": float(np.mean(history["loss"][-10:])),
            "val_loss": history["val_loss"], "seed": stream["seed"] + fold}
    with atomic_path(info_out) as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    return info


def extract_stream(kind: str, shards: list[tuple[str, ...]], stream_name: str, stream: dict,
                   classes: list[str], device: torch.device, out_path: str, provenance: dict,
                   model_path: str | None = None, info_path: str | None = None) -> None:
    """Segment features of every video to HDF5 (``/<video>/features``, S x D float32).

    CNN streams use the fold's fine-tuned model (``model_path``) or, with ``finetune: none``,
    the configured initial weights; descriptor streams compute their features directly.
    """
    backbone = stream["backbone"]
    attrs = {"stream": stream_name, "input": kind, "backbone": backbone,
             "finetune": stream["finetune"], **provenance}
    if backbone in DESCRIPTORS:
        model, spec = None, None
        attrs.update({"layer": backbone, "weights_sha256": "none", "fold": "all",
                      "train_subjects": [], "train_subjects_sha256": sha256_of([])})
    else:
        spec = SPECS[backbone]
        model, init = initial_model(stream, classes)
        attrs.update(init)
        attrs["layer"] = stream["layer"] or next(iter(spec.layers))
        if model_path:
            info = json.loads(open(info_path).read())
            model.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
            attrs.update({"weights_sha256": file_sha256(model_path), "fold": info["fold"],
                          "model_info": info_path, "train_subjects": info["train_subjects"],
                          "train_subjects_sha256": info["train_subjects_sha256"],
                          "train_videos_sha256": info["train_videos_sha256"]})
        else:
            attrs.update({"weights_sha256": init["initial_weights_sha256"], "fold": "all",
                          "train_subjects": [], "train_subjects_sha256": sha256_of([])})
        model.to(device).eval()
    started, forward = time.perf_counter(), 0.0
    with StreamReader(kind, shards) as reader, create_h5(out_path, "features", attrs) as f, \
            ThreadPoolExecutor(1) as prefetch:
        ids = reader.video_ids()

        def load(vid):
            if model is None:
                return None
            images = resize(reader.read(vid), stream["size"])
            return images, reader.groups(vid)

        pending = prefetch.submit(load, ids[0]) if ids else None
        for k, vid in enumerate(progress(ids, f"features {stream_name}")):
            loaded = pending.result()
            if k + 1 < len(ids):
                pending = prefetch.submit(load, ids[k + 1])
            if model is None:
                feats = describe(kind, backbone, stream, reader, vid)
            else:
                feats, seconds = segment_features(model, loaded[0], loaded[1], attrs["layer"],
                                                  spec.segment, device, stream["batch_size"])
                forward += seconds
            write_array(f.create_group(vid), "features", feats)
        elapsed = time.perf_counter() - started
        f.attrs["extract_seconds"] = elapsed
        f.attrs["forward_seconds"] = forward
    if model is not None:
        log.info("extraction %.1f s, forward pass %.1f s (%.0f%%)", elapsed, forward,
                 100 * forward / max(elapsed, 1e-9))


def describe(kind: str, backbone: str, stream: dict, reader: StreamReader, vid: str) -> np.ndarray:
    """Features of a descriptor stream for one video."""
    main, segs = reader.group(vid)
    segments = segs["segment_index"][()]
    if backbone == "landmarks":
        landmarks = main["landmarks"][()][main["source_frame"][()]]
        if not np.isfinite(landmarks).all():
            raise ValueError(f"{vid}: the landmarks stream needs FaceMesh landmarks "
                             "(faces.detector mediapipe with landmarks: true)")
        return descriptors.landmark_features(landmarks, segments)
    return descriptors.handcrafted_features(main["frames"][()], segments, stream["diff"])
