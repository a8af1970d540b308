import numpy as np
import pytest

from vfer import evaluate


def test_metrics_on_known_predictions():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 2, 2])
    m = evaluate.metrics(y_true, y_pred)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["uar"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    # F1 per class: 0: p=3/4 r=3/4 -> .75; 1: p=1/2 r=1/2 -> .5; 2: 1.
    assert m["macro_f1"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)


def test_row_normalised_confusion():
    cm = evaluate.row_normalised_confusion(np.array([0, 0, 0, 0, 1, 1]), np.array([0, 0, 0, 1, 1, 0]), 3)
    assert cm.tolist() == [[75.0, 25.0, 0.0], [50.0, 50.0, 0.0], [0.0, 0.0, 0.0]]


def test_classify_standardises_on_training_data_only():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    centres = np.array([[0, 0], [6, 0], [0, 6]])
    x = centres[y] + rng.normal(size=(60, 2))
    other = rng.normal(size=(60, 3)) * 1000  # a stream on a wildly different scale
    test = np.arange(60) % 4 == 0
    pred, scores = evaluate.classify([x[~test], other[~test]], y[~test], [x[test], other[test]], 4)
    assert (pred == y[test]).mean() >= 0.9
    assert scores.shape == (test.sum(), 4)
    assert np.isnan(scores[:, 3]).all()  # class 3 never seen in training


def test_summarise_mean_and_std():
    s = evaluate.summarise([{"accuracy": 0.5}, {"accuracy": 1.0}])
    assert s["accuracy"] == {"mean": 0.75, "std": 0.25}
