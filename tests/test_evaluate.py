import numpy as np
import pandas as pd
import pytest

from vfer import evaluate
from vfer.evaluate import Experiment, FeatureModel, Settings
from vfer.store import FeaturesFile


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


def test_summarise_mean_and_std():
    s = evaluate.summarise([{"accuracy": 0.5}, {"accuracy": 1.0}])
    assert s["accuracy"] == {"mean": 0.75, "std": 0.25}


def blobs(n_per_class=20, seed=0, dims=(2, 3)):
    """Three separable classes in stream 1 (dims[0]) plus a noisy stream 2 on a huge scale."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], n_per_class)
    centres = np.eye(3)[:, :dims[0]] * 6 if dims[0] <= 3 else None
    x1 = centres[y] + rng.normal(size=(len(y), dims[0]))
    x2 = rng.normal(size=(len(y), dims[1])) * 1000
    return x1, x2, y


def test_each_stream_is_standardised_on_the_training_videos_only():
    x1, x2, y = blobs()
    train = np.arange(len(y)) % 4 != 0
    model = FeatureModel(Settings(), "concat", 1.0, "scale").fit([x1[train], x2[train]], y[train], 4)
    np.testing.assert_allclose(model.scalers[1].mean_, x2[train].mean(0))
    scores = model.scores([x1[~train], x2[~train]])
    assert (np.nanargmax(scores, 1) == y[~train]).mean() >= 0.9
    assert scores.shape == (int((~train).sum()), 4) and np.isnan(scores[:, 3]).all()


def test_sum_of_streams_of_different_dimension_projects_both_by_pca():
    x1, x2, y = blobs(dims=(3, 5))
    model = FeatureModel(Settings(), "sum", 1.0, "scale").fit([x1, x2], y, 3)
    assert [p.n_components_ for p in model.pcas] == [3, 3]
    assert model.scores([x1, x2]).shape == (len(y), 3)


def test_inner_splits_are_grouped_by_training_subject():
    subjects = np.array(["a", "a", "b", "b", "c", "d", "d", "e"])
    labels = np.array([0, 1, 0, 1, 0, 0, 1, 1])
    splits = evaluate.inner_splits(subjects, labels, 3, 0)
    assert len(splits) == 3
    for fit, val in splits:
        assert not set(subjects[fit]) & set(subjects[val])
        assert sorted(np.concatenate([fit, val])) == list(range(len(subjects)))
    assert evaluate.inner_splits(np.array(["a", "a"]), np.array([0, 1]), 3, 0) == []
    split = np.array(["train"] * 6 + ["val"] * 2)
    (fit, val), = evaluate.inner_splits(subjects, labels, 3, 0, split)
    assert val.tolist() == [6, 7]


def test_inner_splits_whose_fit_part_has_one_class_are_left_out():
    subjects = np.array(["a", "a", "lonely"])
    labels = np.array([0, 1, 0])
    (fit, val), = evaluate.inner_splits(subjects, labels, 3, 0)  # not fit on 'lonely' alone
    assert fit.tolist() == [0, 1] and val.tolist() == [2]


def video_data(n_subjects=6, per_subject=4, seed=0):
    """Per-video segment features of two streams; labels alternate within each subject."""
    rng = np.random.default_rng(seed)
    y, subjects, s1, s2 = [], [], [], []
    for s in range(n_subjects):
        for k in range(per_subject):
            label = k % 2
            y.append(label)
            subjects.append(f"S{s}")
            s1.append(label * 3.0 + rng.normal(size=(3, 4)))  # informative
            s2.append(rng.normal(size=(2, 6)))                # noise
    return [s1, s2], np.array(y), np.array(subjects)


def test_inner_selection_never_sees_the_test_subjects(monkeypatch):
    streams, y, subjects = video_data()
    seen = []
    original = Experiment._fit_scores

    def spy(self, streams_, y_, fit_idx, score_idx, *args):
        seen.append((set(subjects[fit_idx]), set(subjects[score_idx])))
        return original(self, streams_, y_, fit_idx, score_idx, *args)

    monkeypatch.setattr(Experiment, "_fit_scores", spy)
    test = np.flatnonzero(np.isin(subjects, ["S0", "S1"]))
    train = np.flatnonzero(~np.isin(subjects, ["S0", "S1"]))
    Experiment(Settings(C=(0.1, 1.0), inner_folds=2), 2).fit_predict(streams, y, subjects, train, test)
    inner = seen[:-1]  # the last call fits on all training videos and scores the test ones
    assert len(inner) == 2 * 2  # two C values x two inner folds
    for fit, scored in inner:
        assert not (fit | scored) & {"S0", "S1"}
        assert not fit & scored
    assert seen[-1] == ({"S2", "S3", "S4", "S5"}, {"S0", "S1"})


def test_score_fusion_weights_are_learned_on_the_simplex():
    assert np.allclose(evaluate.simplex(3).sum(1), 1.0) and len(evaluate.simplex(3)) == 66
    streams, y, subjects = video_data(8)
    test = np.flatnonzero(np.isin(subjects, ["S0", "S1"]))
    train = np.setdiff1d(np.arange(len(y)), test)
    exp = Experiment(Settings(fusion="scores", weights="learned", inner_folds=3), 2)
    scores, chosen = exp.fit_predict(streams, y, subjects, train, test)
    w = np.array(chosen["weights"])
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[0] > w[1]  # the informative stream gets the larger weight
    assert (scores.argmax(1) == y[test]).mean() >= 0.9
    mean = Experiment(Settings(fusion="scores", weights="mean"), 2).fit_predict(
        streams, y, subjects, train, test)[1]
    assert mean["weights"] == [0.5, 0.5]


def test_segment_scores_are_averaged_per_video():
    streams, y, subjects = video_data()
    test = np.flatnonzero(subjects == "S0")
    train = np.flatnonzero(subjects != "S0")
    exp = Experiment(Settings(aggregate="mean_scores"), 2)
    scores, _ = exp.fit_predict(streams[:1], y, subjects, train, test)
    assert scores.shape == (len(test), 2)
    model = FeatureModel(Settings(), "concat", 1.0, "scale")
    x, owner = exp._samples(streams[:1], train)
    model.fit(x, y[train][owner], 2)
    first = model.scores([streams[0][test[0]]]).mean(0)
    np.testing.assert_allclose(scores[0], first)


def test_run_refuses_folds_that_are_not_subject_independent(tmp_path):
    folds = pd.DataFrame({"video_id": ["a", "b", "c", "d"], "subject": ["s1", "s1", "s2", "s2"],
                          "label": ["x", "y", "x", "y"], "fold": [0, 1, 0, 1]})
    with pytest.raises(ValueError, match="subject 's1' is in the test set of fold 0 and in its training set"):
        evaluate.run(folds, {"s": {0: "x.h5", 1: "x.h5"}}, ["x", "y"], Settings())


def test_run_names_the_fold_whose_training_videos_hold_one_class(tmp_path):
    folds = pd.DataFrame({"video_id": ["a", "b", "c"], "subject": ["s1", "s2", "s2"],
                          "label": ["x", "x", "y"], "fold": [1, 0, 0]})
    path = tmp_path / "features.h5"
    with FeaturesFile.create(path, {}) as f:
        for v in folds["video_id"]:
            f.write_video(v, np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"fold 0: its training videos hold a single class \(x\)"):
        evaluate.run(folds, {"s": {0: str(path), 1: str(path)}}, ["x", "y"], Settings())
