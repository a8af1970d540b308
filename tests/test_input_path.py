"""The input path of training and extraction (vfer.training.prefetch, network_inputs,
vfer.features.batch_outputs): the same batches, features and models as the plain path."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from tests.test_training import (CPU, plan, reference_inputs, sample_set, two_class_clips,
                                 write_shard)
from vfer import features, training
from vfer.nets.network import Network
from vfer.store import FeaturesFile

SMALL = {"input": "frames", "backbone": "small_cnn", "size": 24, "finetune": "none",
         "backbone_options": {"channels": [4, 8], "fc": 16}}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def plain_outputs(network, inputs, per_batch):
    """The plain path: per batch, reference_inputs, forward."""
    feats, probs = [], []
    n = len(next(iter(inputs.values())))
    with torch.no_grad():
        for i in range(0, n, per_batch):
            x = reference_inputs({b: v[i:i + per_batch] for b, v in inputs.items()})
            f, logits = network.features_and_logits(x)
            feats.append(f)
            probs.append(torch.softmax(logits, dim=1))
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def test_network_inputs_normalise_in_one_pass_into_channels_last_memory():
    x = {"rgb": images((3, 2, 8, 8, 3)), "vec": np.random.default_rng(1).normal(
        size=(3, 2, 5)).astype(np.float32)}
    plain = reference_inputs(x)
    fused = training.network_inputs(x, CPU)
    torch.testing.assert_close(fused["rgb"], plain["rgb"], rtol=0, atol=1e-6)
    assert torch.equal(fused["vec"], plain["vec"])
    assert fused["rgb"].flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    mean, std = np.array(training.MEAN), np.array(training.STD)
    expected = (x["rgb"][1, 0, 2, 3] / 255.0 - mean) / std  # one pixel, by hand
    np.testing.assert_allclose(fused["rgb"][1, 0, :, 2, 3].numpy(), expected, atol=1e-6)


def test_segment_outputs_match_the_plain_path_for_any_batch_size():
    model = plan({"s": {**SMALL, "finetune": "per_fold"}}).models["s"]
    torch.manual_seed(0)
    network = Network(model["network"], 3).eval()
    x = {"s": images((7, 4, 24, 24, 3))}
    feats, probs = plain_outputs(network, x, 3)
    training.channels_last(network)
    for per_batch in (2, 3, 7, 10):
        f, p = features.segment_outputs(network, x, CPU, per_batch, scores=True)
        assert f.shape == (7, feats.shape[1]) and f.dtype == np.float32
        np.testing.assert_allclose(f, feats, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p, probs, rtol=1e-5, atol=1e-6)
    assert features.segment_outputs(network, x, CPU, 3, scores=False)[1] is None


def test_batches_span_videos_and_say_whose_segments_they_hold():
    videos = [("a", {"x": np.arange(3)}), ("b", {"x": np.arange(10, 11)}),
              ("c", {"x": np.arange(20, 24)})]
    got = list(features.video_batches(videos, 3))
    assert [owners for _, owners in got] == [[("a", 3)], [("b", 1), ("c", 2)], [("c", 2)]]
    assert [b["x"].tolist() for b, _ in got] == [[0, 1, 2], [10, 20, 21], [22, 23]]
    with pytest.raises(ValueError, match="b: no segments"):
        list(features.video_batches([("b", {"x": np.zeros((0, 2))})], 3))


def test_extraction_across_videos_gives_each_video_its_own_features(tmp_path, monkeypatch):
    """Videos of 1 to 4 segments in batches of 3 segments, written every batch, against the
    plain path video by video."""
    model = plan({"s": SMALL}).models["s"]
    clips = {f"v{i}": images((4 * n, 24, 24, 3), seed=i) for i, n in enumerate([2, 1, 4, 3])}
    files = write_shard(tmp_path, clips)
    side, steps = 24, 4
    monkeypatch.setitem(features.EXTRACT_PIXELS, "cpu", 3 * side * side * steps)
    monkeypatch.setattr(features, "WRITE_EVERY", 1)
    features.extract_model(model, {"s": [files]}, ["x", "y"], CPU, str(tmp_path / "f.h5"), {})
    network, _ = training.initial_network(model, ["x", "y"])
    network.eval()
    with FeaturesFile(tmp_path / "f.h5") as f:
        assert f.videos() == sorted(clips)
        for vid, frames in clips.items():
            segments = frames.reshape(-1, 4, 24, 24, 3)
            expected, _ = plain_outputs(network, {"s": segments}, 100)
            np.testing.assert_allclose(f.features(vid), expected, rtol=1e-5, atol=1e-6)


def test_prefetch_keeps_the_order_converts_arrays_only_and_raises_errors():
    def source():
        for k in range(5):
            yield {"a": np.full(2, k), "none": None}, ("tag", k)

    got = list(training.prefetch(source(), CPU))
    assert [tag for _, tag in got] == [("tag", k) for k in range(5)]
    assert all(isinstance(x["a"], torch.Tensor) and x["none"] is None for x, _ in got)
    assert [int(x["a"][0]) for x, _ in got] == list(range(5))

    def failing():
        yield np.zeros(1)
        raise ValueError("unreadable.h5: broken")

    items = training.prefetch(failing(), CPU)
    next(items)
    with pytest.raises(ValueError, match="unreadable.h5: broken"):
        next(items)


def test_closing_prefetch_stops_drawing_batches():
    drawn = []

    def source():
        for k in range(100):
            drawn.append(k)
            yield np.zeros(1)

    items = training.prefetch(source(), CPU, ahead=2)
    next(items)
    items.close()
    assert len(drawn) <= 4  # the one consumed, at most two ahead and one running


class ArraySource:
    """The InputSource interface over arrays: items (N, ...) per video, segments as item
    indices (S x T, overlapping), zero levels (N, 2) or None."""

    def __init__(self, items, index, zeros=None, vector=0):
        self.items_, self.index_, self.zeros_, self.vector = items, index, zeros, vector

    def videos(self):
        return sorted(self.items_)

    def index(self, video):
        return self.index_[video]

    def items(self, video, index):
        return self.items_[video][np.asarray(index)]

    def zero(self, video, index):
        return None if self.zeros_ is None else self.zeros_[video][np.asarray(index)]


def three_inputs(rng):
    """Frames (T 4, 10 x 10 stored, 8 x 8 used), flow with zero levels (T 3), a vector (T 1)
    of three videos with 2, 3 and 1 segments."""
    segs = {"a": 2, "b": 3, "c": 1}
    frames = {v: rng.integers(0, 256, (2 * s + 2, 10, 10, 3), dtype=np.uint8)
              for v, s in segs.items()}
    flow = {v: rng.integers(0, 256, (3 * s, 8, 8, 3), dtype=np.uint8) for v, s in segs.items()}
    zeros = {v: rng.uniform(100, 150, (3 * s, 2)).astype(np.float32) for v, s in segs.items()}
    vec = {v: rng.normal(size=(s, 5)).astype(np.float32) for v, s in segs.items()}
    sources = {
        "rgb": ArraySource(frames, {v: 2 * np.arange(s)[:, None] + np.arange(4)
                                    for v, s in segs.items()}),  # stride 2: items shared
        "flow": ArraySource(flow, {v: np.arange(3 * s).reshape(s, 3) for v, s in segs.items()},
                            zeros),
        "vec": ArraySource(vec, {v: np.arange(s)[:, None] for v, s in segs.items()}, vector=5)}
    sizes = {"rgb": 8, "flow": 8, "vec": None}
    return sources, sizes, sorted(segs), {"a": 0, "b": 1, "c": 0}


@pytest.mark.parametrize("sample_steps", [None, 2])
def test_stored_batches_are_the_batches_read_from_the_sources_on_host_or_device(sample_steps):
    rng = np.random.default_rng(0)
    sources, sizes, videos, labels = three_inputs(rng)
    read = training.SampleSet(sources, sizes, videos, labels, cache_mb=0)
    stored = training.SampleSet(sources, sizes, videos, labels, cache_mb=1)
    placed = training.SampleSet(sources, sizes, videos, labels, cache_mb=1)
    placed.place(CPU)
    assert read.store_bytes() == 0 and stored.store_bytes() == placed.store_bytes() > 0
    assert stored.placed_on() is None and placed.placed_on() == CPU
    assert stored.aligned_steps() == 3
    for _ in range(5):
        idx = rng.integers(0, len(stored), 7)
        steps = None if sample_steps is None else np.sort(np.stack(
            [rng.choice(3, sample_steps, replace=False) for _ in idx]), axis=1)
        want, want_zeros, want_y = read.batch(idx, steps)
        assert want["rgb"].shape == (7, 4 if steps is None else 2, 8, 8, 3)
        assert want["vec"].shape == (7, 1, 5) and want_zeros["rgb"] is None
        for got, got_zeros, got_y in (stored.batch(idx, steps), placed.batch(idx, steps)):
            for b in sources:
                np.testing.assert_array_equal(np.asarray(got[b]), want[b])
            np.testing.assert_array_equal(np.asarray(got_zeros["flow"]), want_zeros["flow"])
            assert got_zeros["rgb"] is None and got_zeros["vec"] is None
            np.testing.assert_array_equal(got_y, want_y)
        assert isinstance(placed.batch(idx, steps)[0]["rgb"], torch.Tensor)
    draws = [(rng.integers(0, len(stored), 7), None if sample_steps is None else np.sort(
        np.stack([rng.choice(3, sample_steps, replace=False) for _ in range(7)]), axis=1))
        for _ in range(5)]
    idx, steps = draws[1]
    smaller = (idx[:6], None if steps is None else steps[:6])
    with pytest.raises(ValueError, match="differ in shape"):  # never split a row wrongly
        list(placed.gathered(iter([draws[0], smaller]), 2))
    gathered = list(placed.gathered(iter(draws), 2))  # chunks of 2, 2 and 1 batches
    assert len(gathered) == 5
    for (got, got_zeros, got_y), drawn in zip(gathered, draws):
        want, want_zeros, want_y = read.batch(*drawn)
        for b in sources:
            np.testing.assert_array_equal(got[b].numpy(), want[b])
        np.testing.assert_array_equal(got_zeros["flow"].numpy(), want_zeros["flow"])
        assert got_zeros["rgb"] is None and got_zeros["vec"] is None
        assert isinstance(got_y, torch.Tensor)
        np.testing.assert_array_equal(got_y.numpy(), want_y)


def test_only_a_stored_set_is_placed_and_only_on_cuda():
    sources, sizes, videos, labels = three_inputs(np.random.default_rng(0))
    read = training.SampleSet(sources, sizes, videos, labels, cache_mb=0)
    with pytest.raises(ValueError, match="cache_mb"):
        read.place(CPU)
    stored = training.SampleSet(sources, sizes, videos, labels, cache_mb=1)
    assert not training.place_on_device(stored, CPU) and not training.place_on_device(None, CPU)
    assert isinstance(stored.batch(np.arange(2))[0]["rgb"], np.ndarray)


@pytest.mark.parametrize("sample_steps,placed", [(2, False), (1, False), (1, True)])
def test_training_batches_are_drawn_in_order_from_the_seeded_generator(tmp_path, sample_steps,
                                                                       placed):
    """The batches of the drawn samples and steps (one numpy ``choice`` per sample, as vfer
    drew them before one step per sample became one vectorised draw, so that results are
    unchanged), the same whether batches come from the prefetching thread (a store on the
    host) or the caller's thread (a store placed on the device)."""
    model = plan({"s": {**SMALL, "finetune": "per_fold", "sample_steps": sample_steps}}
                 ).models["s"]
    samples = sample_set(tmp_path, 6, 0, model)
    labels = {v: y for (v, _), y in zip(samples.items, samples.labels)}
    host = training.SampleSet(samples.sources, samples.sizes, sorted(labels), labels, 0)
    if placed:
        samples.place(CPU)
    cfg = model["train"]
    threads = threading.active_count()
    batches = training._batches(samples, cfg, np.random.default_rng(7), CPU)
    rng = np.random.default_rng(7)
    for _ in range(3):
        inputs, zeros, y = next(batches)
        assert (threading.active_count() > threads) == (not placed)  # the prefetching thread
        idx = rng.integers(0, len(samples), cfg["batch_size"])
        steps = np.sort(np.stack([rng.choice(4, sample_steps, replace=False) for _ in idx]),
                        axis=1)
        want, _, want_y = host.batch(idx, steps)
        assert isinstance(inputs["s"], torch.Tensor) and isinstance(y, torch.Tensor)
        np.testing.assert_array_equal(inputs["s"].numpy(), want["s"])
        np.testing.assert_array_equal(y.numpy(), want_y)
    batches.close()


def test_the_validation_loss_is_the_same_from_a_store_placed_on_the_device(tmp_path):
    model = plan({"s": {**SMALL, "finetune": "per_fold"}}).models["s"]
    samples = sample_set(tmp_path, 6, 0, model)
    network, _ = training.initial_network(model, ["x", "y"])
    want = training.evaluate_loss(network, samples, CPU, 4)
    samples.place(CPU)
    assert training.evaluate_loss(network, samples, CPU, 4) == pytest.approx(want, rel=1e-6)


def test_training_on_the_cpu_is_deterministic(tmp_path):
    spec = {**SMALL, "finetune": "per_fold", "steps": 6, "batch_size": 4, "eval_every": 3,
            "augment": {"flip": True, "rotate": 5.0, "crop": 0.9}}
    model = plan({"s": spec}).models["s"]
    train_set, val_set = sample_set(tmp_path, 6, 0, model), sample_set(tmp_path, 4, 1, model)

    def weights(seed):
        network, _ = training.initial_network(model, ["x", "y"])
        history = training.fit(network, train_set, val_set, model["train"], seed, CPU)
        return network.state_dict(), history

    (a, ha), (b, hb), (c, _) = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a) and ha == hb
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed draws other batches


def test_validation_loss_is_the_mean_cross_entropy(tmp_path):
    model = plan({"s": {**SMALL, "finetune": "per_fold"}}).models["s"]
    samples = sample_set(tmp_path, 5, 0, model)
    network, _ = training.initial_network(model, ["x", "y"])
    network.eval()
    inputs, _, y = samples.batch(np.arange(len(samples)))
    with torch.no_grad():
        logits = network(reference_inputs(inputs))
    expected = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)).item()
    assert training.evaluate_loss(network, samples, CPU, 3) == pytest.approx(expected, rel=1e-6)


def test_augment_takes_zero_levels_as_arrays_or_tensors():
    x = torch.rand(4, 2, 3, 6, 6)
    zeros = np.full((4, 2, 2), 0.4, np.float32)
    draw = next(training.augment_draws(torch.Generator().manual_seed(3), 4, True, 4.0, 0.9, CPU))
    a = training.augment({"f": x}, {"f": zeros}, draw)
    b = training.augment({"f": x}, {"f": torch.from_numpy(zeros)}, draw)
    assert torch.equal(a["f"], b["f"]) and not torch.equal(a["f"], x)
