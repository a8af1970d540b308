import numpy as np
import torch

from vfer import features
from vfer.features import StreamVideo
from vfer.models import SmallCNN


def two_class_images(n, size=24, seed=0):
    """Class 0: bright top half; class 1: bright bottom half; plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, 60, (n, size, size, 3))
    for i, label in enumerate(y):
        half = slice(0, size // 2) if label == 0 else slice(size // 2, size)
        x[i, half] += 150
    return x.astype(np.uint8), y.astype(np.int64)


def test_training_learns_a_separable_task():
    x, y = two_class_images(64)
    model = SmallCNN(2, input_size=24, pool=4)
    losses = features.train(model, x, y, steps=60, batch_size=16, lr=3e-3, weight_decay=0.0,
                            seed=0, device=torch.device("cpu"))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    x_test, y_test = two_class_images(32, seed=1)
    with torch.no_grad():
        pred = model(features.to_tensor(x_test)).argmax(1).numpy()
    assert (pred == y_test).mean() >= 0.9


def test_extract_averages_each_segments_images_and_is_repeatable():
    torch.manual_seed(0)
    model = SmallCNN(2, input_size=24, pool=4).eval()
    x, _ = two_class_images(6)
    video = StreamVideo(x, np.array([[0, 1, 2], [3, 4, 5], [0, 0, 5]]))
    feats = features.extract(model, video, torch.device("cpu"), batch_size=4)
    with torch.no_grad():
        per_image = model.features(features.to_tensor(x)).numpy()
    assert feats.shape == (3, model.feature_dim)
    np.testing.assert_allclose(feats[0], per_image[:3].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats[2], per_image[[0, 0, 5]].mean(0), rtol=1e-5, atol=1e-6)
    again = features.extract(model, video, torch.device("cpu"), batch_size=4)
    np.testing.assert_array_equal(feats, again)  # bit-identical with the same settings
    other_batching = features.extract(model, video, torch.device("cpu"), batch_size=256)
    np.testing.assert_allclose(feats, other_batching, rtol=1e-5, atol=1e-6)


def test_training_set_labels_every_image_with_its_video_label():
    videos = {"a": StreamVideo(np.zeros((3, 4, 4, 3), np.uint8), np.array([[0, 1, 2]])),
              "b": StreamVideo(np.zeros((2, 4, 4, 3), np.uint8), np.array([[0, 1]])),
              "c": StreamVideo(np.zeros((5, 4, 4, 3), np.uint8), np.array([[0, 1]]))}
    x, y = features.training_set(videos, {"a": 1, "b": 0})  # c is not a training video
    assert len(x) == 5 and y.tolist() == [1, 1, 1, 0, 0]
