"""The temporal models see order: clips whose label is the direction of time.

Each clip shows surprise going from neutral to apex (label ``onset``) or the very same frames
played backwards (label ``offset``). A video's frames are the same set in both classes,
so a network that averages its time steps cannot tell them apart, while an LSTM or a ConvLSTM
over the same frames can. Evaluated subject-independently (3 folds of 2 subjects), through the
same training, extraction and evaluation functions the workflow runs.
"""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from vfer import config as cfg
from vfer import demo, evaluate, features, training
from vfer.store import FacesFile, SegmentsFile

pytestmark = pytest.mark.workflow

SUBJECTS, CLIPS, LENGTH, SIDE = 6, 3, 16, 32
CLASSES = ["onset", "offset"]
TRAIN = {"steps": 160, "batch_size": 16, "lr": 0.003, "eval_every": 20, "patience": 4,
         "val_fraction": 0.25, "augment": {"flip": True, "rotate": 3.0, "crop": 0.92},
         "head": {"dropout": 0.0}}
SMALL_CNN = {"input": "frames", "backbone": "small_cnn", "size": SIDE,
             "backbone_options": {"channels": [8, 16], "fc": 32}}
NETWORKS = {
    "lstm": {"inputs": {"rgb": SMALL_CNN}, "temporal": {"kind": "lstm", "hidden": 32}, **TRAIN},
    # a ConvLSTM over the small CNN's maps (8 x 8 after its pooling)
    "convlstm": {"inputs": {"rgb": {**SMALL_CNN, "layer": "conv"}},
                 "temporal": {"kind": "convlstm", "channels": [16], "kernels": [3],
                              "pool": False}, **TRAIN},
    # the same network as lstm, averaging its time steps (it cannot do better than chance)
    "mean": {"inputs": {"rgb": SMALL_CNN}, "temporal": {"kind": "mean"}, **TRAIN, "steps": 60},
}


@pytest.fixture(scope="module")
def order_dataset(tmp_path_factory):
    """Face crops of 36 clips (6 subjects x 3 renders of surprise x 2 directions)."""
    root = tmp_path_factory.mktemp("order")
    photo = demo.load_photo()
    ramp = np.clip(np.linspace(-0.1, 1.1, LENGTH), 0, 1)
    profile = ramp * ramp * (3 - 2 * ramp)  # smooth neutral -> apex
    rows = []
    with FacesFile.create(root / "faces.h5", {}) as faces, \
            SegmentsFile.create(root / "segments.h5", {}) as segs:
        for s in range(SUBJECTS):
            subject = demo.make_subject(21, s)
            cx, cy = (subject.to_frame @ np.append(photo.origin, 1.0))[:2]
            y0, x0 = int(cy) - 35, int(cx) - 50
            for k in range(CLIPS):
                frames = demo.render_clip(subject, "surprise", np.random.default_rng([21, s, k]),
                                          profile=profile)
                crops = np.stack([cv2.resize(f[y0:y0 + 100, x0:x0 + 100], (SIDE, SIDE),
                                             interpolation=cv2.INTER_AREA) for f in frames])
                for direction, clip in (("onset", crops), ("offset", crops[::-1])):
                    vid = f"S{s}_{k}_{direction}"
                    n = len(clip)
                    faces.write_video(vid, np.ascontiguousarray(clip),
                                      np.zeros((n, 4), np.float32), np.ones(n, np.float32),
                                      np.zeros((n, 2, 2), np.float32),
                                      np.zeros((n, 478, 3), np.float32), np.ones(n, bool),
                                      np.arange(n, dtype=np.int32), np.arange(n, dtype=np.int32),
                                      {})
                    segs.write_video(vid, np.arange(LENGTH)[None], n)
                    rows.append({"video_id": vid, "subject": f"S{s}", "label": direction,
                                 "fold": s // 2})
    files = {"faces": str(root / "faces.h5"), "segments": str(root / "segments.h5")}
    return root, files, pd.DataFrame(rows)


def accuracy(name: str, root, files, folds) -> float:
    """Subject-independent accuracy of a network's own softmax, trained per fold."""
    plan = cfg.load({"samples": "unused", "classes": CLASSES, "seed": 0,
                     "networks": {name: copy.deepcopy(NETWORKS[name])},
                     "experiments": [{"name": name, "streams": [name],
                                      "classifier": {"kind": "softmax"}}]})
    model = plan.models[name]
    shards = {"rgb": [files]}
    paths = {}
    for fold in sorted(folds["fold"].unique()):
        stem = root / f"{name}{fold}"
        info = training.train_model(model, shards, folds, fold, CLASSES, torch.device("cpu"),
                                    f"{stem}.pt", f"{stem}.json")
        tested = set(folds.loc[folds["fold"] == fold, "subject"])
        assert not tested & set(info["train_subjects"])  # provenance: subject-independent
        features.extract_model(model, shards, CLASSES, torch.device("cpu"), f"{stem}.h5", {},
                               f"{stem}.pt", f"{stem}.json")
        paths[int(fold)] = f"{stem}.h5"
    settings = evaluate.Settings.from_config(plan.experiments[name], "mean_features", 0)
    result, _ = evaluate.run(folds, {name: paths}, CLASSES, settings)
    print(f"{name}: accuracy {result['pooled']['accuracy']:.3f} (pytest -s shows it)")
    return result["pooled"]["accuracy"]


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["lstm", "convlstm"])
def test_lstm_and_convlstm_tell_the_direction_of_time(order_dataset, name):
    assert accuracy(name, *order_dataset) >= 0.9


def test_mean_pooling_cannot_tell_the_direction_of_time(order_dataset):
    assert abs(accuracy("mean", *order_dataset) - 0.5) <= 0.15
