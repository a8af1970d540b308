import json

import h5py
import numpy as np
import pytest
import torch

from tests.conftest import stage_defaults
from vfer import features
from vfer.io import create_h5, write_array
from vfer.models import SmallCNN


class ArraySamples:
    """In-memory stand-in for features.Samples."""

    def __init__(self, x, y):
        self.x, self.labels = x, y

    def __len__(self):
        return len(self.x)

    def batch(self, idx):
        return self.x[idx], self.labels[idx]


def two_class_images(n, size=24, seed=0):
    """Class 0: bright top half; class 1: bright bottom half; plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, 60, (n, size, size, 3))
    for i, label in enumerate(y):
        half = slice(0, size // 2) if label == 0 else slice(size // 2, size)
        x[i, half] += 150
    return x.astype(np.uint8), y.astype(np.int64)


def train_cfg(**kw):
    cfg = {"steps": 60, "batch_size": 16, "lr": 3e-3, "weight_decay": 0.0, "eval_every": 10,
           "patience": 3, "augment": {"flip": True, "rotate": 5.0, "crop": 0.9}}
    cfg.update(kw)
    return cfg


def test_training_learns_a_separable_task_and_keeps_the_best_validation_model():
    x, y = two_class_images(64)
    xv, yv = two_class_images(32, seed=1)
    model = SmallCNN(2, input_size=24, pool=4)
    history = features.train(model, ArraySamples(x, y), ArraySamples(xv, yv), train_cfg(), False,
                             0, torch.device("cpu"))
    assert np.mean(history["loss"][-10:]) < 0.5 * np.mean(history["loss"][:10])
    best_step, best_loss = min(history["val_loss"], key=lambda s: s[1])
    assert history["best_step"] == best_step
    assert features.evaluate_loss(model, ArraySamples(xv, yv), torch.device("cpu"), 8) == \
        pytest.approx(best_loss, rel=1e-5)  # the model kept is the best one
    with torch.no_grad():
        pred = model(features.to_tensor(xv)).argmax(1).numpy()
    assert (pred == yv).mean() >= 0.9


def test_early_stopping_stops_when_validation_stalls():
    x, y = two_class_images(32)
    rng = np.random.default_rng(3)
    noise = ArraySamples(rng.integers(0, 255, (16, 24, 24, 3)).astype(np.uint8), rng.integers(0, 2, 16))
    history = features.train(SmallCNN(2, input_size=24, pool=4), ArraySamples(x, y), noise,
                             train_cfg(steps=400, eval_every=5, patience=2), False, 0,
                             torch.device("cpu"))
    assert len(history["loss"]) < 400


def test_augment_flip_negates_the_x_flow():
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, :, 0] = 0.2  # x flow image: leftmost column
    gen = torch.Generator().manual_seed(0)
    while True:  # draw until a flip happens
        out = features.augment(x, gen, True, 0.0, 1.0, negate_x=True)
        if not torch.equal(out, x):
            break
    assert torch.allclose(out[0, 0, :, 3], torch.full((4,), 0.8))  # mirrored and negated
    assert torch.allclose(out[0, 0, :, :3], torch.ones(4, 3))      # zero flow (0) became 1.0
    plain = features.augment(x, gen, False, 0.0, 1.0, negate_x=True)
    assert torch.equal(plain, x)


def test_segment_features_average_images_or_take_clips():
    torch.manual_seed(0)
    model = SmallCNN(2, input_size=24, pool=4).eval()
    x, _ = two_class_images(6)
    groups = np.array([[0, 1, 2], [3, 4, 5], [0, 0, 5]])
    feats, _ = features.segment_features(model, x, groups, "fc", False, torch.device("cpu"), 4)
    with torch.no_grad():
        per_image = model.features_of(features.to_tensor(x)).numpy()
    np.testing.assert_allclose(feats[2], per_image[[0, 0, 5]].mean(0), rtol=1e-5, atol=1e-6)
    again, _ = features.segment_features(model, x, groups, "fc", False, torch.device("cpu"), 4)
    np.testing.assert_array_equal(feats, again)


def test_validation_subjects_come_from_the_training_subjects():
    fit, val = features.split_validation(["a", "b", "c", "d", "e"], 0.2, 0)
    assert len(val) == 1 and not fit & val and fit | val == set("abcde")
    assert features.split_validation(["a", "b", "c", "d", "e"], 0.2, 0) == (fit, val)
    assert features.split_validation(["a"], 0.2, 0) == ({"a"}, set())


@pytest.fixture
def shard(tmp_path):
    """A faces and a segments file with three videos of random frames."""
    rng = np.random.default_rng(0)
    faces, segs = tmp_path / "faces.h5", tmp_path / "segments.h5"
    with create_h5(faces, "faces", {}) as f, create_h5(segs, "segments", {}) as s:
        for v in ("a", "b", "c"):
            write_array(f.create_group(v), "frames", rng.integers(0, 255, (20, 32, 32, 3)).astype(np.uint8))
            write_array(s.create_group(v), "segment_index", np.arange(16)[None] + np.array([[0], [4]]))
    return str(faces), str(segs)


def stream(**kw):
    cfg = {"input": "frames", "backbone": "small_cnn", "size": 32, "layer": None, "weights": None,
           "finetune": "none", "batch_size": 8, "seed": 0, "diff": "hog"}
    cfg.update(kw)
    return cfg


def test_extracting_twice_on_the_cpu_gives_identical_features(shard, tmp_path):
    outs = []
    for k in range(2):
        out = tmp_path / f"f{k}.h5"
        features.extract_stream("frames", [shard], "spatial", stream(), ["x", "y"],
                                torch.device("cpu"), str(out), {})
        outs.append(out)
    with h5py.File(outs[0]) as a, h5py.File(outs[1]) as b:
        assert sorted(a) == ["a", "b", "c"]
        for v in a:
            assert a[v]["features"].shape == (2, 64)
            np.testing.assert_array_equal(a[v]["features"][()], b[v]["features"][()])
        assert a.attrs["initial_weights"] == "random" and a.attrs["fold"] == "all"


def test_descriptor_streams_need_no_model(shard, tmp_path):
    out = tmp_path / "hog.h5"
    features.extract_stream("frames", [shard], "handcrafted", stream(backbone="hog"), ["x", "y"],
                            torch.device("cpu"), str(out), {})
    with h5py.File(out) as f:
        assert f["a"]["features"].shape == (2, 2 * 1764)
        assert f.attrs["weights_sha256"] == "none"


def test_train_stream_records_what_it_trained_on(shard, tmp_path):
    import pandas as pd

    folds = pd.DataFrame({"video_id": ["a", "b", "c"], "subject": ["s1", "s2", "s3"],
                          "label": ["x", "y", "x"], "fold": [0, 1, 2]})
    folds.to_csv(tmp_path / "folds.tsv", sep="\t", index=False)
    cfg = stream(finetune="per_fold", steps=4, lr=1e-3, weight_decay=0.0, val_fraction=0.5,
                 eval_every=2, patience=2, augment={"flip": True, "rotate": 2.0, "crop": 0.95},
                 cache_mb=10)
    info = features.train_stream("frames", [shard], str(tmp_path / "folds.tsv"), 0, cfg, ["x", "y"],
                                 torch.device("cpu"), str(tmp_path / "m.pt"), str(tmp_path / "m.json"))
    assert sorted(info["train_videos"] + info["validation_videos"]) == ["b", "c"]
    assert len(info["validation_videos"]) == 1
    assert info["train_subjects"] == ["s2", "s3"]
    assert json.loads((tmp_path / "m.json").read_text())["fold"] == 0
    out = tmp_path / "fold0.h5"
    features.extract_stream("frames", [shard], "spatial", cfg, ["x", "y"], torch.device("cpu"),
                            str(out), {}, str(tmp_path / "m.pt"), str(tmp_path / "m.json"))
    with h5py.File(out) as f:
        assert json.loads(f.attrs["train_subjects"]) == ["s2", "s3"] and f.attrs["fold"] == 0
