"""Segment features (and class scores) of every video, to HDF5 (vfer.store.FeaturesFile).

A network's features are what its ``features`` setting names (the head's last hidden layer, or
its input: for a stream, the mean of its backbone's tap over the segment); a network trained
per fold also writes its softmax class probabilities per segment (``scores``), which a
``classifier: {kind: softmax}`` experiment evaluates. Descriptors (landmarks, hog) are
computed directly, never trained. On the CPU the same inputs give identical features.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import torch

from vfer.io import file_sha256, sha256_of
from vfer.nets.registry import DESCRIPTORS
from vfer.runtime import progress, to_host
from vfer.store import FeaturesFile
from vfer.training import (autocast, channels_last, initial_network, network_inputs, prefetch,
                           resize, sources_of)

log = logging.getLogger(__name__)

#: Pixels per forward pass at extraction (images x side^2), per device type: batches as large
#: as keep the device busy (on the CPU larger batches only spill the caches), bounded memory.
EXTRACT_PIXELS = {"cpu": 1 << 19, "cuda": 1 << 24}


def describe(model: dict, shards: list[Mapping[str, str]], out_path: str,
             provenance: dict) -> None:
    """Features of a descriptor stream (landmarks or hog) for every video."""
    from vfer.store import FacesFile, SegmentsFile

    fn = DESCRIPTORS.get(model["descriptor"])
    attrs = {"stream": model["name"], "backbone": model["descriptor"], "fold": "all",
             "weights_sha256": "none", "train_subjects": [],
             "train_subjects_sha256": sha256_of([]), **provenance}
    with FeaturesFile.create(out_path, attrs) as out:
        for files in shards:
            with FacesFile(files["faces"]) as faces, SegmentsFile(files["segments"]) as segs:
                for vid in progress(segs.videos(), f"features {model['name']}"):
                    segments = segs.segment_index(vid)
                    if model["descriptor"] == "landmarks":
                        landmarks = faces.landmarks(vid)[faces.source_frame(vid)]
                        if not np.isfinite(landmarks).all():
                            raise ValueError(f"{vid}: the landmarks stream needs FaceMesh "
                                             "landmarks (faces.detector mediapipe with "
                                             "landmarks: true)")
                        feats = fn(landmarks, segments)
                    else:
                        feats = fn(faces.frames(vid), segments, model["diff"])
                    out.write_video(vid, feats)


@torch.no_grad()
def batch_outputs(network: torch.nn.Module, batches: Iterator[tuple[Mapping, object]],
                  device: torch.device, scores: bool) -> Iterator[tuple]:
    """(tag, features, softmax probabilities or None) of each (inputs, tag) of ``batches``,
    float32 on the device: the batches prefetched (vfer.training.prefetch) and normalised on
    the device; nothing waits for the device."""
    for x, tag in prefetch(batches, device):
        x = network_inputs(x, device)
        with autocast(device):
            f, logits = network.features_and_logits(x)
        yield tag, f.float(), torch.softmax(logits.float(), dim=1) if scores else None


def segment_outputs(network: torch.nn.Module, inputs: Mapping[str, np.ndarray],
                    device: torch.device, segments_per_batch: int,
                    scores: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Features (S x D float32) and softmax probabilities (S x K, or None) of S segments."""
    outputs = [(f, p) for _, f, p in batch_outputs(
        network, video_batches([(None, inputs)], segments_per_batch), device, scores)]
    feats, probs = zip(*outputs)
    return to_host(torch.cat(feats)), to_host(torch.cat(probs)) if scores else None


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {b: np.concatenate([p[b] for p in parts]) for b in parts[0]}


def video_batches(videos: Iterable[tuple[str, Mapping[str, np.ndarray]]],
                  per_batch: int) -> Iterator[tuple[dict, list[tuple[str, int]]]]:
    """Batches of ``per_batch`` segments (the last one: what is left) across videos in order,
    each with the (video, number of its segments) it holds; ``videos`` gives each video's
    inputs (S x ... per branch)."""
    parts, owners, have = [], [], 0
    for vid, inputs in videos:
        n = len(next(iter(inputs.values())))
        if n == 0:
            raise ValueError(f"{vid}: no segments")
        start = 0
        while start < n:
            take = min(n - start, per_batch - have)
            parts.append({b: v[start:start + take] for b, v in inputs.items()})
            owners.append((vid, take))
            have, start = have + take, start + take
            if have == per_batch:
                yield _concat(parts), owners
                parts, owners, have = [], [], 0
    if have:
        yield _concat(parts), owners


#: Batches computed between two writes of the finished videos' outputs (each write waits for
#: the device; prefetching goes on meanwhile).
WRITE_EVERY = 8


def extract_model(model: dict, shards: Mapping[str, list[Mapping[str, str]]],
                  classes: list[str], device: torch.device, out_path: str, provenance: dict,
                  model_path: str | None = None, info_path: str | None = None) -> None:
    """Segment features of every video with a fold's trained network (``model_path``) or,
    with ``finetune: none``, with the configured initial weights. Batches of segments span
    videos, read, resized and moved to the device ahead of the network (prefetch)."""
    network, initial = initial_network(model, classes)
    attrs = {"stream": model["name"], "finetune": model["finetune"],
             "initial_weights": initial, **provenance}
    if model_path:
        info = json.loads(open(info_path).read())
        network.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
        attrs.update({"weights_sha256": file_sha256(model_path), "fold": info["fold"],
                      "model_info": info_path, "train_subjects": info["train_subjects"],
                      "train_subjects_sha256": info["train_subjects_sha256"],
                      "train_videos_sha256": info["train_videos_sha256"]})
    else:
        attrs.update({"weights_sha256": sha256_of(initial), "fold": "all",
                      "train_subjects": [], "train_subjects_sha256": sha256_of([])})
    channels_last(network.to(device).eval())
    branches = {b["name"]: b for b in model["network"]["branches"]}
    steps = sum(b["steps"] for b in branches.values())
    side = max(b["size"] or 1 for b in branches.values())
    per_batch = max(1, EXTRACT_PIXELS.get(device.type, 1 << 19) // (side * side * steps))
    sources = sources_of(model, shards)
    started, segments = time.perf_counter(), 0
    try:
        ids = sorted(set.intersection(*(set(s.videos()) for s in sources.values())))

        def load():
            for vid in progress(ids, f"features {model['name']}"):
                out = {}
                for b, source in sources.items():
                    items = source.items(vid, source.index(vid))
                    size = branches[b]["size"]
                    out[b] = resize(items, size) if size else items
                yield vid, out

        with FeaturesFile.create(out_path, attrs) as out:
            outputs: dict[str, list] = {}  # video -> [(features, probabilities)] on the device

            def write(videos: list[str]) -> None:
                for vid in videos:
                    feats, probs = zip(*outputs.pop(vid))
                    out.write_video(vid, to_host(torch.cat(feats)),
                                    to_host(torch.cat(probs)) if model_path else None)

            batches = batch_outputs(network, video_batches(load(), per_batch), device,
                                    scores=bool(model_path))
            for k, (owners, f, p) in enumerate(batches):
                offset = 0
                for vid, n in owners:
                    outputs.setdefault(vid, []).append(
                        (f[offset:offset + n], None if p is None else p[offset:offset + n]))
                    offset += n
                segments += offset
                if (k + 1) % WRITE_EVERY == 0:
                    write(list(outputs)[:-1])  # the last one may go on in the next batch
            write(list(outputs))
    finally:
        for s in sources.values():
            s.close()
    elapsed = time.perf_counter() - started
    log.info("extraction %.1f s, %d segments in batches of %d (%.1f segments/s)", elapsed,
             segments, per_batch, segments / max(elapsed, 1e-9))
