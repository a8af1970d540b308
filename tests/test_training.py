"""Training networks per fold and extracting their features (vfer.training, vfer.features)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from vfer import config as cfg
from vfer import features, training
from vfer.inputs import InputSource
from vfer.store import FacesFile, FeaturesFile, SegmentsFile

CPU = torch.device("cpu")


def reference_inputs(inputs):
    """The network's inputs written plainly, apart from vfer.training.network_inputs: uint8
    images (B, T, H, W, 3) -> (B, T, 3, H, W) float (x / 255 - MEAN) / STD; vectors as
    they are."""
    mean = torch.tensor(training.MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(training.STD).view(1, 1, 3, 1, 1)
    out = {}
    for b, x in inputs.items():
        x = torch.as_tensor(x)
        if x.dtype == torch.uint8:
            x = (x.permute(0, 1, 4, 2, 3).contiguous().float() / 255.0 - mean) / std
        out[b] = x
    return out


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def plan(streams=None, networks=None, experiments=None, **top):
    """The plan of a minimal config (only the keys given, the rest defaults)."""
    c = {"samples": "unused.tsv", "classes": ["x", "y"], "streams": streams or {},
         "networks": networks or {}, "segments": {"length": 4, "stride": 4},
         "experiments": experiments or [{"name": n, "streams": [n]}
                                        for n in {**(streams or {}), **(networks or {})}]}
    c.update(top)
    return cfg.load(c)


def write_shard(tmp_path, clips: dict[str, np.ndarray], length=4):
    """Faces and segments files of clips (T x H x W x 3 uint8), segments of ``length``."""
    faces, segs = tmp_path / "faces.h5", tmp_path / "segments.h5"
    with FacesFile.create(faces, {}) as f, SegmentsFile.create(segs, {}) as s:
        for vid, frames in clips.items():
            n = len(frames)
            f.write_video(vid, frames, np.zeros((n, 4), np.float32), np.ones(n, np.float32),
                          np.zeros((n, 2, 2), np.float32), np.zeros((n, 478, 3), np.float32),
                          np.ones(n, bool), np.arange(n, dtype=np.int32),
                          np.arange(n, dtype=np.int32), {})
            starts = np.arange(0, n - length + 1, length)
            s.write_video(vid, starts[:, None] + np.arange(length)[None], n)
    return {"faces": str(faces), "segments": str(segs)}


def two_class_clips(n, size=24, frames=8, seed=0):
    """Class 0: bright top half; class 1: bright bottom half; plus noise."""
    rng = np.random.default_rng(seed)
    clips, labels = {}, {}
    for i in range(n):
        label = i % 2
        x = rng.integers(0, 60, (frames, size, size, 3))
        half = slice(0, size // 2) if label == 0 else slice(size // 2, size)
        x[:, half] += 150
        clips[f"v{seed}_{i}"] = x.astype(np.uint8)
        labels[f"v{seed}_{i}"] = label
    return clips, labels


SPATIAL = {"spatial": {"input": "frames", "backbone": "small_cnn", "size": 24, "steps": 60,
                       "batch_size": 16, "lr": 3e-3, "weight_decay": 0.0, "eval_every": 10,
                       "patience": 3}}


def sample_set(tmp_path, n, seed, model):
    clips, labels = two_class_clips(n, seed=seed)
    (tmp_path / str(seed)).mkdir()
    files = write_shard(tmp_path / str(seed), clips)
    sources = {b: InputSource("frames", [files]) for b in model["sources"]}
    sizes = {b["name"]: b["size"] for b in model["network"]["branches"]}
    return training.SampleSet(sources, sizes, sorted(clips), labels, 100)


def test_training_learns_a_separable_task_and_keeps_the_best_validation_model(tmp_path):
    model = plan(SPATIAL).models["spatial"]
    train_set, val_set = sample_set(tmp_path, 16, 0, model), sample_set(tmp_path, 8, 1, model)
    network, _ = training.initial_network(model, ["x", "y"])
    history = training.fit(network, train_set, val_set, model["train"], 0, CPU)
    assert np.mean(history["loss"][-10:]) < 0.5 * np.mean(history["loss"][:10])
    best_step, best_loss = min(history["val_loss"], key=lambda s: s[1])
    assert history["best_step"] == best_step
    assert training.evaluate_loss(network, val_set, CPU, 8) == pytest.approx(best_loss, rel=1e-5)
    inputs, _, y = val_set.batch(np.arange(len(val_set)))
    with torch.no_grad():
        pred = network(reference_inputs(inputs)).argmax(1).numpy()
    assert (pred == y).mean() >= 0.9


def test_early_stopping_stops_when_validation_stalls(tmp_path):
    model = plan({"s": {**SPATIAL["spatial"], "steps": 400, "eval_every": 5,
                        "patience": 2}}).models["s"]
    train_set = sample_set(tmp_path, 8, 0, model)
    noise = sample_set(tmp_path, 8, 1, model)
    noise.labels = np.random.default_rng(3).integers(0, 2, len(noise))
    network, _ = training.initial_network(model, ["x", "y"])
    history = training.fit(network, train_set, noise, model["train"], 0, CPU)
    assert len(history["loss"]) < 400


def test_a_diverged_training_keeps_its_best_validated_model_or_stops_with_an_error(
        tmp_path, monkeypatch, caplog):
    model = plan({"s": {**SPATIAL["spatial"], "steps": 8, "eval_every": 2}}).models["s"]
    train_set = sample_set(tmp_path, 8, 0, model)
    val_set = sample_set(tmp_path, 8, 1, model)
    calls = []

    class Diverging(torch.nn.CrossEntropyLoss):  # NaN from the third step on
        def forward(self, logits, y):
            calls.append(1)
            loss = super().forward(logits, y)
            return loss * float("nan") if len(calls) > 2 else loss

    monkeypatch.setattr(training.nn, "CrossEntropyLoss", Diverging)
    network, _ = training.initial_network(model, ["x", "y"])
    history = training.fit(network, train_set, val_set, model["train"], 0, CPU)
    assert history["best_step"] == 2 and len(history["loss"]) == 4
    assert all(torch.isfinite(p).all() for p in network.parameters())
    assert "training diverged by step 4" in caplog.text
    calls.clear()
    network, _ = training.initial_network(model, ["x", "y"])
    with pytest.raises(FloatingPointError, match="training diverged: the loss is nan by step 4"):
        training.fit(network, train_set, None, model["train"], 0, CPU)


def normalised(x):
    """Images (B, T, 3, H, W) in [0, 1] -> the network's normalised values."""
    mean = torch.tensor(training.MEAN).view(1, 1, 3, 1, 1)
    return (x - mean) / torch.tensor(training.STD).view(1, 1, 3, 1, 1)


def intensities(x):
    """The inverse of ``normalised``."""
    std = torch.tensor(training.STD).view(1, 1, 3, 1, 1)
    return x * std + torch.tensor(training.MEAN).view(1, 1, 3, 1, 1)


def test_one_flip_is_applied_to_every_branch_and_negates_x_flow_about_its_zero():
    x = torch.zeros(2, 3, 3, 4, 4)
    x[:, :, 0, :, 0] = 0.2  # x channel: leftmost column
    inputs = {"rgb": normalised(x), "flow": normalised(x), "dyn": normalised(x[:, :1])}
    zeros = {"rgb": None, "flow": np.full((2, 3, 2), 0.5, np.float32),
             "dyn": np.full((2, 1, 2), 0.25, np.float32)}
    draws = training.augment_draws(torch.Generator().manual_seed(0), 2, True, 0.0, 1.0, CPU)
    while True:  # draw until the first sample is flipped and the second is not
        out = training.augment(inputs, zeros, next(draws))
        if not torch.equal(out["rgb"][0], inputs["rgb"][0]) and \
                torch.equal(out["rgb"][1], inputs["rgb"][1]):
            break
    out = {b: intensities(v) for b, v in out.items()}

    def close(a, value):
        torch.testing.assert_close(a, torch.full_like(a, value), rtol=0, atol=1e-6)

    close(out["rgb"][0, :, 0, :, 3], 0.2)  # mirrored only
    close(out["flow"][0, :, 0, :, 3], 0.8)  # 2 * 0.5 - 0.2
    close(out["flow"][0, :, 0, :, :3], 1.0)  # zero flow -> 1.0
    close(out["dyn"][0, :, 0, :, 3], 0.3)  # 2 * 0.25 - 0.2
    torch.testing.assert_close(out["flow"][1], x[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(out["flow"][0, :, 1:], x[0, :, 1:].flip(-1), rtol=0, atol=1e-6)


def reference_augment(x, zeros, seed, rotate, crop):
    """vfer's augmentation written plainly on images in [0, 1] with vfer's draws: mirror the
    flipped samples, rotate and crop with torch's affine_grid, then x -> 2z - x of the
    flipped samples' x flow (``zeros``: (B, T, 2) or None)."""
    n, t, c, h, w = x.shape
    u = torch.rand(n, 5, generator=torch.Generator().manual_seed(seed))
    flipped = u[:, 0] < 0.5
    angle, scale = torch.deg2rad((u[:, 1] * 2 - 1) * rotate), crop + (1 - crop) * u[:, 2]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = scale * torch.cos(angle), -scale * torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = scale * torch.sin(angle), scale * torch.cos(angle)
    theta[:, 0, 2] = (u[:, 3] * 2 - 1) * (1 - scale)
    theta[:, 1, 2] = (u[:, 4] * 2 - 1) * (1 - scale)
    x = torch.where(flipped.view(n, 1, 1, 1, 1), x.flip(-1), x)
    grid = torch.nn.functional.affine_grid(theta, [n, t * c, h, w], align_corners=False)
    x = torch.nn.functional.grid_sample(x.reshape(n, t * c, h, w), grid, padding_mode="border",
                                        align_corners=False).reshape(n, t, c, h, w)
    if zeros is not None:
        z = torch.from_numpy(zeros)[..., 0, None, None]
        x[:, :, 0] = torch.where(flipped.view(n, 1, 1, 1), 2 * z - x[:, :, 0], x[:, :, 0])
    return x, flipped


def test_rotation_crop_and_flip_are_one_resampling_equal_to_the_plain_steps():
    """The flip folded into the rotation and crop's affine map, on normalised values, gives
    what mirroring, then torch's affine_grid resampling, then negating the x flow give on
    intensities; every branch and time step gets its sample's transform."""
    rng = np.random.default_rng(0)
    rgb = torch.from_numpy(rng.random((6, 3, 3, 10, 12), dtype=np.float32))
    flow = torch.from_numpy(rng.random((6, 2, 3, 10, 12), dtype=np.float32))
    zeros = rng.uniform(0.4, 0.6, (6, 2, 2)).astype(np.float32)
    draw = next(training.augment_draws(torch.Generator().manual_seed(5), 6, True, 10.0, 0.8,
                                       CPU))
    out = training.augment({"rgb": normalised(rgb), "flow": normalised(flow)},
                           {"rgb": None, "flow": zeros}, draw)
    expected_rgb, flipped = reference_augment(rgb, None, 5, 10.0, 0.8)
    expected_flow, _ = reference_augment(flow, zeros, 5, 10.0, 0.8)
    assert 0 < flipped.sum() < len(flipped)
    torch.testing.assert_close(intensities(out["rgb"]), expected_rgb, rtol=0, atol=1e-5)
    torch.testing.assert_close(intensities(out["flow"]), expected_flow, rtol=0, atol=1e-5)
    assert out["rgb"].flatten(0, 1).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("flip, rotate, crop", [(True, 10.0, 0.8), (True, 0.0, 1.0),
                                                (False, 5.0, 1.0)])
def test_augmentation_drawn_in_chunks_is_drawn_batch_by_batch(flip, rotate, crop):
    """Drawing several batches' augmentation at once (one copy to the device) gives each
    batch the draws it gets drawn alone, in the same order."""
    def draws(chunk):
        it = training.augment_draws(torch.Generator().manual_seed(2), 5, flip, rotate, crop,
                                    CPU, chunk)
        return [next(it) for _ in range(7)]

    for one, chunked in zip(draws(1), draws(3)):
        assert one.resample == chunked.resample == (rotate > 0 or crop < 1)
        assert one.any_flip == chunked.any_flip == bool(one.flipped.any())
        assert torch.equal(one.flipped, chunked.flipped) and torch.equal(one.theta, chunked.theta)
    assert len({(str(d.flipped.flatten().tolist()), d.theta.sum().item()) for d in draws(3)}) > 1


def test_channels_last_keeps_large_kernels_channels_first_and_the_values():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, padding=2),
                              torch.nn.Conv2d(4, 2, training.CHANNELS_FIRST_KERNEL, padding="same"))
    seen = []
    net[1].register_forward_hook(lambda m, args, out: seen.append(args[0]))
    x = torch.rand(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    before = net(x)
    for _ in range(2):  # a second call changes nothing
        training.channels_last(net)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert net[1].weight.is_contiguous() and len(net[1]._forward_pre_hooks) == 1
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-5)
    assert seen[-1].is_contiguous()  # the large kernel's input made channels-first


def test_stream_features_are_the_segment_mean_of_the_backbone_tap(tmp_path):
    model = plan({"s": {**SPATIAL["spatial"], "finetune": "none"}}).models["s"]
    clips, _ = two_class_clips(3)
    files = write_shard(tmp_path, clips)
    outs = []
    for k in range(2):
        outs.append(tmp_path / f"f{k}.h5")
        features.extract_model(model, {"s": [files]}, ["x", "y"], CPU, str(outs[-1]), {})
    network, _ = training.initial_network(model, ["x", "y"])
    backbone = network.backbones()["s"].eval()
    with FeaturesFile(outs[0]) as a, FeaturesFile(outs[1]) as b:
        assert a.videos() == sorted(clips) and not a.has_scores and a.attrs["fold"] == "all"
        for vid, frames in clips.items():
            got = a.features(vid)
            assert got.shape == (2, 64)
            np.testing.assert_array_equal(got, b.features(vid))
            x = reference_inputs({"s": frames[None]})["s"][0]
            with torch.no_grad():
                taps = backbone.tap(x, ["fc"])[0].numpy()
            np.testing.assert_allclose(got, taps.reshape(2, 4, -1).mean(1), rtol=1e-4,
                                       atol=1e-5)


def test_validation_subjects_come_from_the_training_subjects():
    fit, val = training.split_validation(["a", "b", "c", "d", "e"], 0.2, 0)
    assert len(val) == 1 and not fit & val and fit | val == set("abcde")
    assert training.split_validation(["a", "b", "c", "d", "e"], 0.2, 0) == (fit, val)
    assert training.split_validation(["a"], 0.2, 0) == ({"a"}, set())


def test_descriptor_streams_need_no_model(tmp_path):
    model = plan({"hog": {"input": "frames", "backbone": "hog", "finetune": "none"}}).models["hog"]
    files = write_shard(tmp_path, two_class_clips(2, size=32)[0])
    features.describe(model, [files], str(tmp_path / "hog.h5"), {})
    with FeaturesFile(tmp_path / "hog.h5") as f:
        assert f.features(f.videos()[0]).shape == (2, 2 * 1764)
        assert f.attrs["weights_sha256"] == "none"


def folds_table(subjects: dict[str, str], labels: dict[str, int], fold: dict[str, int]):
    return pd.DataFrame({"video_id": list(subjects), "subject": list(subjects.values()),
                         "label": ["xy"[labels[v]] for v in subjects],
                         "fold": [fold[v] for v in subjects]})


def test_a_two_input_network_trains_only_on_training_subjects(tmp_path):
    networks = {"two": {"inputs": {"rgb": {"input": "frames", "backbone": "small_cnn",
                                           "size": 24},
                                   "dyn": {"input": "frames", "backbone": "identity",
                                           "size": 8, "pool": "avg"}},
                        "temporal": {"kind": "lstm", "hidden": 8}, "steps": 4,
                        "batch_size": 4, "eval_every": 2, "val_fraction": 0.5}}
    model = plan(networks=networks).models["two"]
    clips, labels = two_class_clips(6)
    files = write_shard(tmp_path, clips)
    vids = sorted(clips)
    subjects = {v: f"s{i // 2}" for i, v in enumerate(vids)}
    fold = {v: int(subjects[v][1:]) for v in vids}
    folds = folds_table(subjects, labels, fold)
    info = training.train_model(model, {"rgb": [files], "dyn": [files]}, folds, 0, ["x", "y"],
                                CPU, str(tmp_path / "m.pt"), str(tmp_path / "m.json"))
    seen = set(info["train_videos"]) | set(info["validation_videos"])
    assert seen == set(vids[2:]) and info["train_subjects"] == ["s1", "s2"]
    assert len(info["validation_videos"]) == 2  # one of the two training subjects
    assert json.loads((tmp_path / "m.json").read_text())["train_videos_sha256"] == \
        info["train_videos_sha256"]
    out = tmp_path / "fold0.h5"
    features.extract_model(model, {"rgb": [files], "dyn": [files]}, ["x", "y"], CPU, str(out),
                           {}, str(tmp_path / "m.pt"), str(tmp_path / "m.json"))
    with FeaturesFile(out) as f:
        assert f.attrs["fold"] == 0 and json.loads(f.attrs["train_subjects"]) == ["s1", "s2"]
        scores = f.scores(vids[0])
        assert scores.shape == (2, 2) and np.allclose(scores.sum(1), 1.0, atol=1e-5)
    leaky = folds.copy()
    leaky.loc[leaky["video_id"] == vids[2], "subject"] = "s0"  # s0 tested in fold 0, trains
    with pytest.raises(training.LeakageError, match="fold 0: .* would be trained on and tested"):
        training.train_model(model, {"rgb": [files], "dyn": [files]}, leaky, 0, ["x", "y"], CPU,
                             str(tmp_path / "m2.pt"), str(tmp_path / "m2.json"))
    assert not (tmp_path / "m2.pt").exists()


def test_label_smoothing_keeps_the_training_loss_above_the_targets_entropy(tmp_path):
    e = 0.4  # targets (0.8, 0.2): no model gets its cross-entropy below their entropy
    floor = -(0.8 * np.log(0.8) + 0.2 * np.log(0.2))
    losses = {}
    for smoothing in (0.0, e):
        model = plan({"s": {**SPATIAL["spatial"], "label_smoothing": smoothing}}).models["s"]
        (tmp_path / str(smoothing)).mkdir()
        train_set = sample_set(tmp_path / str(smoothing), 16, 0, model)
        network, _ = training.initial_network(model, ["x", "y"])
        history = training.fit(network, train_set, None, model["train"], 0, CPU)
        losses[smoothing] = np.array(history["loss"])
        inputs, _, y = train_set.batch(np.arange(len(train_set)))
        with torch.no_grad():
            p = network(reference_inputs(inputs)).softmax(1).numpy()
        assert (p.argmax(1) == y).mean() >= 0.9  # both learn the task
    assert losses[e].min() >= floor - 1e-4
    assert losses[0.0][-10:].mean() < floor - 0.2  # plain cross-entropy goes far below it


def test_a_repeated_protocol_trains_each_fold_on_its_own_repetition(tmp_path):
    from vfer.folds import assign_folds

    model = plan({"s": {**SPATIAL["spatial"], "steps": 2, "eval_every": 1}}).models["s"]
    clips, labels = two_class_clips(12)
    files = write_shard(tmp_path, clips)
    vids = sorted(clips)
    samples = pd.DataFrame({"video_id": vids, "subject": [f"s{i // 2}" for i in range(12)],
                            "label": ["xy"[labels[v]] for v in vids]})
    folds = assign_folds(samples, "kfold", folds=3, seed=0, repeats=2)
    for fold in (1, 4):
        info = training.train_model(model, {"s": [files]}, folds, fold, ["x", "y"], CPU,
                                    str(tmp_path / f"m{fold}.pt"), str(tmp_path / f"m{fold}.json"))
        rows = folds[folds["repeat"] == fold // 3]
        tested = set(rows.loc[rows["fold"] == fold, "subject"])
        assert set(info["train_subjects"]) == set(rows["subject"]) - tested
        assert len(info["train_videos"]) + len(info["validation_videos"]) == 8
    final = training.train_final(model, {"s": [files]}, folds, ["x", "y"], CPU,
                                 str(tmp_path / "final.pt"), str(tmp_path / "final.json"))
    assert sorted(final["train_videos"] + final["validation_videos"]) == vids  # each once


def test_a_predefined_split_stops_early_on_its_val_rows_and_never_trains_on_them(tmp_path):
    from vfer.folds import assign_folds

    model = plan({"s": {**SPATIAL["spatial"], "steps": 2, "eval_every": 1}}).models["s"]
    clips, labels = two_class_clips(12)
    files = write_shard(tmp_path, clips)
    vids = sorted(clips)
    split = ["train"] * 6 + ["val"] * 2 + ["test"] * 4
    samples = pd.DataFrame({"video_id": vids, "subject": [f"s{i // 2}" for i in range(12)],
                            "label": ["xy"[labels[v]] for v in vids], "split": split})
    folds = assign_folds(samples, "split")
    info = training.train_model(model, {"s": [files]}, folds, 0, ["x", "y"], CPU,
                                str(tmp_path / "m.pt"), str(tmp_path / "m.json"))
    assert info["train_videos"] == vids[:6] and info["validation_videos"] == vids[6:8]
    with pytest.raises(ValueError, match=f"video '{vids[0]}' is listed 2 times"):
        training.SampleSet({}, {}, [vids[0], vids[1], vids[0]], {}, 0)


@pytest.mark.parametrize("name, reference", [
    ("adam", lambda p, c: torch.optim.Adam(p, lr=c["lr"], weight_decay=c["weight_decay"])),
    ("sgd", lambda p, c: torch.optim.SGD(p, lr=c["lr"], momentum=c["momentum"],
                                         weight_decay=c["weight_decay"])),
    ("adadelta", lambda p, c: torch.optim.Adadelta(p, lr=c["lr"], rho=c["momentum"],
                                                   weight_decay=c["weight_decay"])),
])
def test_optimizers_update_as_torch_optim_does(name, reference):
    """vfer's optimizers (which spare every training job torch.optim's import of torch._dynamo)
    give torch.optim's parameters, step by step, with the learning rate changed between steps
    as a schedule does, and a parameter that gets its first gradient late."""
    from vfer.nets.registry import OPTIMIZERS

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
            for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    c = {"lr": 0.05, "weight_decay": 0.01, "momentum": 0.9}
    ours, theirs = OPTIMIZERS.build(name, nets[0].parameters(), c), reference(
        nets[1].parameters(), c)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    for step in range(6):
        lr = c["lr"] * (1 - step / 6)
        ours.lr = lr
        for group in theirs.param_groups:
            group["lr"] = lr
        for net, opt in zip(nets, (ours, theirs)):
            opt.zero_grad()
            out = net(x) if step >= 2 else net[2](torch.randn(8, 4, generator=torch.Generator()
                                                              .manual_seed(step)))
            torch.nn.functional.cross_entropy(out, y).backward()
            opt.step()
        for a, b in zip(nets[0].parameters(), nets[1].parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["adam", "sgd", "adadelta"])
def test_optimizer_state_is_made_once_per_parameter(name):
    """A parameter's state (Adam's two moments: two parameter-sized tensors) is made at its
    first gradient only, not built again and thrown away at every step."""
    from vfer.nets.registry import OPTIMIZERS

    net = torch.nn.Linear(3, 2)
    opt = OPTIMIZERS.build(name, net.parameters(), {"lr": 0.1, "weight_decay": 0.0,
                                                    "momentum": 0.9})
    made, new_state = [], opt.new_state
    opt.new_state = lambda p: made.append(p) or new_state(p)
    for _ in range(4):
        opt.zero_grad()
        net(torch.randn(4, 3)).sum().backward()
        opt.step()
    assert len(made) == 2 and {id(p) for p in made} == {id(p) for p in net.parameters()}
