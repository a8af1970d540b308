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
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from vfer.io import file_sha256, sha256_of
from vfer.nets.registry import DESCRIPTORS
from vfer.runtime import progress
from vfer.store import FeaturesFile
from vfer.training import autocast, initial_network, normalise, resize, sources_of, to_device

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
def segment_outputs(network: torch.nn.Module, inputs: Mapping[str, np.ndarray],
                    device: torch.device, segments_per_batch: int,
                    scores: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Features (S x D float32) and softmax probabilities (S x K, or None) of S segments."""
    feats, probs = [], []
    n = len(next(iter(inputs.values())))
    for i in range(0, n, segments_per_batch):
        x = normalise(to_device({b: v[i:i + segments_per_batch] for b, v in inputs.items()},
                                device))
        with autocast(device):
            f, logits = network.features_and_logits(x)
        feats.append(f.float().cpu())
        if scores:
            probs.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(feats).numpy().astype(np.float32), \
        torch.cat(probs).numpy().astype(np.float32) if scores else None


def extract_model(model: dict, shards: Mapping[str, list[Mapping[str, str]]],
                  classes: list[str], device: torch.device, out_path: str, provenance: dict,
                  model_path: str | None = None, info_path: str | None = None) -> None:
    """Segment features of every video with a fold's trained network (``model_path``) or,
    with ``finetune: none``, with the configured initial weights."""
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
    network.to(device).eval()
    branches = {b["name"]: b for b in model["network"]["branches"]}
    steps = sum(b["steps"] for b in branches.values())
    side = max(b["size"] or 1 for b in branches.values())
    per_batch = max(1, EXTRACT_PIXELS.get(device.type, 1 << 19) // (side * side * steps))
    sources = sources_of(model, shards)
    started, forward = time.perf_counter(), 0.0
    try:
        ids = sorted(set.intersection(*(set(s.videos()) for s in sources.values())))

        def load(vid):
            out = {}
            for b, source in sources.items():
                items = source.items(vid, source.index(vid))
                size = branches[b]["size"]
                out[b] = resize(items, size) if size else items
            return out

        with FeaturesFile.create(out_path, attrs) as out, ThreadPoolExecutor(1) as prefetch:
            pending = prefetch.submit(load, ids[0]) if ids else None
            for k, vid in enumerate(progress(ids, f"features {model['name']}")):
                inputs = pending.result()
                if k + 1 < len(ids):
                    pending = prefetch.submit(load, ids[k + 1])
                start = time.perf_counter()
                feats, probs = segment_outputs(network, inputs, device, per_batch,
                                               scores=bool(model_path))
                forward += time.perf_counter() - start
                out.write_video(vid, feats, probs)
    finally:
        for s in sources.values():
            s.close()
    elapsed = time.perf_counter() - started
    log.info("extraction %.1f s, forward pass %.1f s (%.0f%%)", elapsed, forward,
             100 * forward / max(elapsed, 1e-9))
