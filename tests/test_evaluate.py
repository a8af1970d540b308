import json

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
    exp = Experiment(Settings(C=(0.1, 1.0), inner_folds=2), 2)
    exp.fit_predict(exp.prepare(streams), y, subjects, train, test)
    inner = seen[:-1]  # the last call fits on all training videos and scores the test ones
    assert len(inner) == 2 * 2  # two C values x two inner folds
    for fit, scored in inner:
        assert not (fit | scored) & {"S0", "S1"}
        assert not fit & scored
    assert seen[-1] == ({"S2", "S3", "S4", "S5"}, {"S0", "S1"})


def test_a_test_subject_among_the_training_videos_is_refused_whatever_the_protocol():
    streams, y, subjects = video_data()
    test = np.flatnonzero(subjects == "S0")
    train = np.setdiff1d(np.arange(len(y)), test[:1])  # S0's other videos train
    exp = Experiment(Settings(C=(0.1, 1.0), inner_folds=2), 2)
    with pytest.raises(ValueError, match="test subject 'S0' would take part in model selection"):
        exp.fit_predict(exp.prepare(streams), y, subjects, train, test[:1])
    split = np.where(np.arange(len(y)) == test[0], "test", "train")  # a predefined split
    folds = pd.DataFrame({"video_id": [f"v{i}" for i in range(len(y))], "subject": subjects,
                          "label": y, "fold": np.where(split == "test", 0, -1), "split": split})
    with pytest.raises(ValueError, match="subject 'S0' is in the test set of fold 0 and in its "
                                         "training set"):
        evaluate.run(folds, {}, ["a", "b"], Settings())


def test_score_fusion_weights_are_learned_on_the_simplex():
    assert np.allclose(evaluate.simplex(3).sum(1), 1.0) and len(evaluate.simplex(3)) == 66
    streams, y, subjects = video_data(8)
    test = np.flatnonzero(np.isin(subjects, ["S0", "S1"]))
    train = np.setdiff1d(np.arange(len(y)), test)
    exp = Experiment(Settings(fusion="scores", weights="learned", inner_folds=3), 2)
    scores, chosen = exp.fit_predict(exp.prepare(streams), y, subjects, train, test)
    # The noise stream's calibration is near-uniform, so the plain mean is right on every
    # inner validation video and is kept (unit cases: test_learned_weights_leave_the_mean...).
    assert chosen["weights"] == [0.5, 0.5]
    noise_temperature = chosen["streams"][1]["calibration"]["temperature"]
    assert noise_temperature > 10 * chosen["streams"][0]["calibration"]["temperature"]
    assert (scores.argmax(1) == y[test]).mean() >= 0.9
    np.testing.assert_allclose(scores.sum(1), 1.0)  # calibrated probabilities
    mean = Experiment(Settings(fusion="scores", weights="mean"), 2)
    assert mean.fit_predict(mean.prepare(streams), y, subjects, train, test)[1]["weights"] == \
        [0.5, 0.5]


def test_segment_scores_are_averaged_per_video():
    streams, y, subjects = video_data()
    test = np.flatnonzero(subjects == "S0")
    train = np.flatnonzero(subjects != "S0")
    exp = Experiment(Settings(aggregate="mean_scores"), 2)
    prepared = exp.prepare(streams[:1])
    scores, _ = exp.fit_predict(prepared, y, subjects, train, test)
    assert scores.shape == (len(test), 2)
    model = FeatureModel(Settings(), "concat", 1.0, "scale")
    x, owner = exp._samples(prepared, train)
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


@pytest.fixture
def one_thread():
    """BLAS on one thread: the many small fits of score fusion only wait on a busy machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def spied(monkeypatch):
    """Record (fit videos, scored videos) of every classifier fit and the labels of every
    calibration or stacking fit."""
    fits, score_fits = [], []
    original = Experiment._fit_scores

    def spy(self, streams_, y_, fit_idx, score_idx, *args):
        fits.append((np.array(fit_idx), np.array(score_idx)))
        return original(self, streams_, y_, fit_idx, score_idx, *args)

    def spying(cls):
        fit = cls.fit

        def spy_fit(self, x, y_):
            score_fits.append((cls.__name__, np.array(y_)))
            return fit(self, x, y_)
        monkeypatch.setattr(cls, "fit", spy_fit)

    monkeypatch.setattr(Experiment, "_fit_scores", spy)
    spying(evaluate.Temperature)
    spying(evaluate.Stacker)
    return fits, score_fits


@pytest.mark.parametrize("weights", ["mean", "learned", "stacking"])
def test_score_fusion_calibrates_and_stacks_on_inner_folds_of_training_subjects_only(
        monkeypatch, one_thread, weights):
    streams, y, subjects = video_data(8)
    test = np.flatnonzero(np.isin(subjects, ["S0", "S1"]))
    train = np.setdiff1d(np.arange(len(y)), test)
    fits, score_fits = spied(monkeypatch)
    exp = Experiment(Settings(fusion="scores", weights=weights, C=(0.1, 1.0), inner_folds=3), 2)
    scores, chosen = exp.fit_predict(exp.prepare(streams), y, subjects, train, test)
    inner = evaluate.inner_splits(subjects[train], y[train], 3, 0)
    oof_rows = np.concatenate([train[val] for _, val in inner])
    # Per stream: 2 C values x 3 inner folds, then one fit on all training videos.
    assert len(fits) == 2 * (2 * 3 + 1)
    for k, (fit_idx, score_idx) in enumerate(fits):
        assert not set(fit_idx) & set(test)  # no classifier ever trains on a test video
        if k % 7 == 6:  # the refit: every training video, scoring the test videos
            assert fit_idx.tolist() == train.tolist() and score_idx.tolist() == test.tolist()
        else:  # inner: fitted and scored on disjoint training subjects
            assert set(score_idx) <= set(train)
            assert not set(subjects[fit_idx]) & set(subjects[score_idx])
    assert [f[1].tolist() for f in fits[:3]] == [train[val].tolist() for _, val in inner]
    # Calibration (and stacking) fits see out-of-fold scores of training videos only: their
    # labels are those of the inner validation videos, all of them, or a subset when
    # cross-fitting (groups of the inner folds).
    whole = [kind for kind, labels in score_fits if len(labels) == len(oof_rows)]
    assert whole == ["Temperature"] * 2 + ["Stacker"] * (weights == "stacking")
    for _, labels in score_fits:
        assert len(labels) <= len(oof_rows) < len(y)
        if len(labels) == len(oof_rows):
            assert labels.tolist() == y[oof_rows].tolist()
    np.testing.assert_allclose(scores.sum(1), 1.0)
    assert (scores.argmax(1) == y[test]).mean() >= 0.9
    assert ("stacking" in chosen) == (weights == "stacking")


def test_stream_selection_sees_training_subjects_only_and_drops_a_noise_stream(monkeypatch):
    streams, y, subjects = video_data(8)
    test = np.flatnonzero(np.isin(subjects, ["S0", "S1"]))
    train = np.setdiff1d(np.arange(len(y)), test)
    fits, _ = spied(monkeypatch)
    exp = Experiment(Settings(select=True, C=(0.1, 1.0), inner_folds=3), 2)
    scores, chosen = exp.fit_predict(exp.prepare(streams), y, subjects, train, test)
    assert len(fits) == 3 * 2 * 3 + 1  # 3 subsets x 2 C values x 3 inner folds, one refit
    for fit_idx, score_idx in fits[:-1]:
        assert set(fit_idx) | set(score_idx) <= set(train)
        assert not set(subjects[fit_idx]) & set(subjects[score_idx])
    assert fits[-1][0].tolist() == train.tolist() and fits[-1][1].tolist() == test.tolist()
    accuracy = {tuple(t["selected"]): t["inner_accuracy"] for t in chosen["subsets"]}
    assert list(accuracy) == [(0, 1), (0,), (1,)]  # largest first: ties keep more streams
    assert accuracy[(1,)] < 0.75 <= accuracy[(0,)]  # the noise stream alone is near chance
    best = max(accuracy.values())
    assert chosen["selected"] == list(next(k for k, a in accuracy.items() if a == best))
    assert [row["params"]["C"] for row in chosen["selection"]] == [0.1, 1.0]


def noisy_streams(seed=0, n_subjects=20, per_subject=12, classes=4):
    """An informative stream (16-d, class means plus subject offsets and noise: far from
    perfect) and a pure-noise stream of 256 dimensions on a larger scale."""
    rng = np.random.default_rng(seed)
    y = np.tile(np.arange(classes), n_subjects * per_subject // classes)
    subjects = np.repeat([f"S{i:02d}" for i in range(n_subjects)], per_subject)
    who = np.repeat(np.arange(n_subjects), per_subject)
    informative = rng.normal(size=(classes, 16))[y] * 0.6 + \
        rng.normal(size=(n_subjects, 16))[who] * 0.5 + rng.normal(size=(len(y), 16))
    noise = rng.normal(size=(len(y), 256)) * 3
    return [[r[None] for r in informative], [r[None] for r in noise]], y, subjects


def losgo_accuracy(settings, streams, y, subjects, groups=5) -> float:
    from vfer.folds import subject_groups

    group = subject_groups(subjects, groups, 0)
    fold = np.array([group[s] for s in subjects])
    exp = Experiment(settings, 4)
    prepared = exp.prepare(streams)
    return 100 * np.mean([np.mean(exp.fit_predict(prepared, y, subjects,
                                                  np.flatnonzero(fold != k),
                                                  np.flatnonzero(fold == k))[0].argmax(1)
                                  == y[fold == k]) for k in range(groups)])


def test_fusion_with_a_noise_stream_stays_within_2_points_of_the_informative_stream(one_thread):
    streams, y, subjects = noisy_streams()
    C = (0.01, 0.1, 1.0)
    alone = losgo_accuracy(Settings(C=C), streams[:1], y, subjects)
    assert 60 <= alone <= 90  # informative, far from perfect, far above chance (25%)
    fused = {name: losgo_accuracy(Settings(C=C, **kw), streams, y, subjects) for name, kw in {
        "concat_select": {"select": True},
        "scores_mean": {"fusion": "scores"},
        "scores_learned": {"fusion": "scores", "weights": "learned"},
        "scores_stacking": {"fusion": "scores", "weights": "stacking"}}.items()}
    for name, accuracy in fused.items():
        assert abs(accuracy - alone) <= 2.0, (name, accuracy, alone)
    # Concatenation without selection: balancing keeps the 256 noise dimensions from drowning
    # the 16 informative ones, but cannot make pure noise harmless.
    balanced = losgo_accuracy(Settings(C=C), streams, y, subjects)
    unbalanced = losgo_accuracy(Settings(C=C, balance=False), streams, y, subjects)
    assert unbalanced < balanced - 10 and unbalanced < alone - 15


def test_raw_sum_fusion_adds_the_non_negative_features_as_they_are():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    a = rng.random((40, 5)) + y[:, None] * np.array([0.5, 0, 0, 0, 0])
    b = rng.random((40, 5)) * 10  # a larger scale: standardising would change its share
    raw = FeatureModel(Settings(standardise=False), "sum", 1.0, "scale").fit([a, b], y, 2)
    from sklearn.svm import SVC
    plain = SVC(kernel="linear", C=1.0).fit(a + b, y)
    np.testing.assert_allclose(raw.scores([a, b])[:, 1], plain.decision_function(a + b))
    standardised = FeatureModel(Settings(), "sum", 1.0, "scale").fit([a, b], y, 2)
    assert not np.allclose(standardised.scores([a, b]), raw.scores([a, b]))
    product = FeatureModel(Settings(standardise=False), "product", 1.0, "scale").fit([a, b], y, 2)
    np.testing.assert_allclose(product.scores([a, b])[:, 1],
                               SVC(kernel="linear").fit(a * b, y).decision_function(a * b))
    with pytest.raises(ValueError, match=r"raw features \(standardise: false\) needs streams "
                                         r"of equal dimension, got \[3, 5\]"):
        FeatureModel(Settings(standardise=False), "sum", 1.0, "scale").fit([a[:, :3], b], y, 2)


def test_each_stream_is_normalised_per_sample_before_fusion():
    streams = [[np.array([[3.0, 4.0], [0.0, 2.0]])], [np.array([[0.5, -2.0], [1.0, 0.0]])]]
    exp = Experiment(Settings(normalise=("l2", "tanh")), 2)
    l2, tanh = exp.prepare(streams)  # mean_features: the video's mean, then normalised
    np.testing.assert_allclose(l2, [[1.5 / np.hypot(1.5, 3.0), 3.0 / np.hypot(1.5, 3.0)]])
    np.testing.assert_allclose(tanh, np.tanh([[0.75, -1.0]]))
    segments = Experiment(Settings(normalise=("l2", "none"), aggregate="mean_scores"), 2)
    l2, raw = segments.prepare(streams)  # mean_scores: every segment's features
    np.testing.assert_allclose(l2[0], [[0.6, 0.8], [0.0, 1.0]])
    assert raw[0] is streams[1][0]


def test_temperature_calibration_keeps_the_prediction_and_doubts_a_perfect_stream():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    x = np.eye(3)[y] * 2 + rng.normal(size=(30, 3)) * 0.1  # separable: no mistake
    t = evaluate.Temperature(3).fit(x, y)
    p = t.proba(x)
    assert (p.argmax(1) == x.argmax(1)).all() and np.allclose(p.sum(1), 1)
    e = 1 / (30 + 2)  # Platt's smoothed target: the mean confidence stays near 1 - e
    assert abs(p[np.arange(30), y].mean() - (1 - e)) < 0.01
    noisy = x + rng.normal(size=x.shape) * 3  # many mistakes: a larger temperature
    assert evaluate.Temperature(3).fit(noisy, y).temperature > 5 * t.temperature


def test_stacking_chooses_C_by_cross_fitted_accuracy_and_shrinks_towards_the_mean():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    good = np.full((60, 3), 0.1) + 0.7 * np.eye(3)[y]  # right every time
    bad = rng.dirichlet(np.ones(3), 60)  # no information
    probs = np.stack([good, bad], 1)
    z = evaluate.stacking_inputs(probs)
    np.testing.assert_allclose(z[:, 0], np.log((good + bad) / 2))
    groups = np.arange(60) % 3
    meta, p, info = evaluate.fit_score_model(lambda C: evaluate.Stacker(C, 3), z, y, groups,
                                             evaluate.STACK_C)
    accuracy = [r["accuracy"] for r in info["selection"]]
    assert [r["C"] for r in info["selection"]] == list(evaluate.STACK_C)
    assert info["C"] == evaluate.STACK_C[int(np.argmax(accuracy))]  # first of the best
    held = groups == 0  # cross-fitted: a group's rows come from a model fitted on the others
    other = evaluate.Stacker(info["C"], 3).fit(z[~held], y[~held])
    np.testing.assert_allclose(p[held], other.proba(z[held]), atol=1e-6)
    tiny = evaluate.Stacker(1e-6, 3).fit(z, y)  # all shrinkage: the mean of the streams
    np.testing.assert_allclose(tiny.weights, [1, 0, 0], atol=1e-3)
    np.testing.assert_allclose(tiny.proba(z), (good + bad) / 2 / ((good + bad) / 2).sum(1,
                               keepdims=True), atol=1e-3)
    free = evaluate.Stacker(100.0, 3).fit(z, y)
    assert free.weights[1] > free.weights[2] + 0.5  # the informative stream, not the noise


def test_learned_weights_leave_the_mean_only_for_accuracy():
    y = np.array([0, 1, 0, 1])
    right = np.eye(2)[y] * 0.8 + 0.1
    wrong_once = right.copy()
    wrong_once[0] = [0.05, 0.95]  # confidently wrong on the first video
    sharp = np.eye(2)[y] * 0.98 + 0.01
    # Both weightings are right on every video: the plain mean is kept (log loss would pick
    # the sharper stream alone).
    np.testing.assert_allclose(evaluate.learned_weights(np.stack([right, sharp], 1), y),
                               [0.5, 0.5])
    # The mean is wrong on the first video; more weight on the first stream fixes it.
    w = evaluate.learned_weights(np.stack([right, wrong_once], 1), y)
    assert w[0] > 0.5 and (np.einsum("nsk,s->nk", np.stack([right, wrong_once], 1), w)
                           .argmax(1) == y).all()
    assert w[0] == pytest.approx(0.6)  # the closest to the mean that is right everywhere


def test_run_over_a_repeated_protocol_trains_each_fold_within_its_repetition(tmp_path):
    from vfer.folds import assign_folds

    samples = pd.DataFrame([{"video_id": f"v{s}_{k}", "subject": f"S{s}",
                             "label": "x" if k % 2 else "y"} for s in range(6) for k in range(4)])
    path = tmp_path / "features.h5"
    rng = np.random.default_rng(0)
    with FeaturesFile.create(path, {}) as f:
        for v, label in zip(samples["video_id"], samples["label"]):
            f.write_video(v, (rng.normal(size=(2, 3)) + 3 * (label == "x")).astype(np.float32))
    folds = assign_folds(samples, "kfold", folds=3, seed=0, repeats=2)
    files = {"s": {k: str(path) for k in range(6)}}
    result, predictions = evaluate.run(folds, files, ["x", "y"], Settings(inner_folds=2))
    assert [f["fold"] for f in result["folds"]] == list(range(6))
    assert len(predictions) == 2 * len(samples)  # every video once per repetition
    repetitions = predictions.groupby("video_id")["fold"].apply(lambda f: sorted(f // 3))
    assert all(r == [0, 1] for r in repetitions)
    assert result["mean"]["accuracy"]["mean"] == pytest.approx(
        np.mean([f["accuracy"] for f in result["folds"]]))
    leaky = folds.copy()  # repetition 1 splits subject S0 over two folds
    s0 = np.flatnonzero((leaky["repeat"] == 1) & (leaky["subject"] == "S0"))
    leaky.loc[s0[0], "fold"] = 3 + (leaky.loc[s0[1], "fold"] - 3 + 1) % 3
    with pytest.raises(ValueError, match="subject 'S0' is in the test set of fold"):
        evaluate.run(leaky, files, ["x", "y"], Settings())


def test_inner_folds_validate_only_on_videos_no_network_was_trained_on():
    subjects = np.repeat(list("abcdef"), 2)
    labels = np.tile([0, 1], 6)
    honest = np.isin(subjects, ["e", "f"])  # a network's validation subjects
    splits = evaluate.inner_splits(subjects, labels, 3, 0, honest=honest)
    assert len(splits) == 2  # one per honest subject (fewer than inner_folds)
    assert sorted(tuple(sorted(set(subjects[val]))) for _, val in splits) == [("e",), ("f",)]
    for fit, val in splits:
        assert honest[val].all() and not set(subjects[fit]) & set(subjects[val])
        assert len(fit) + len(val) == len(subjects)  # the fit part keeps every other video
    assert evaluate.inner_splits(subjects, labels, 3, 0, honest=np.zeros(12, bool)) == []


def test_run_validates_on_the_videos_the_fine_tuned_network_held_out(tmp_path, monkeypatch):
    samples = pd.DataFrame([{"video_id": f"v{s}_{k}", "subject": f"S{s}",
                             "label": "x" if k % 2 else "y", "fold": int(s >= 4)}
                            for s in range(8) for k in range(4)])
    rng = np.random.default_rng(0)
    files = {}
    for fold in (0, 1):
        train = samples[samples["fold"] != fold]
        held = train[train["subject"].isin(train["subject"].unique()[:2])]  # validation
        record = tmp_path / f"fold{fold}.json"
        record.write_text(json.dumps({"train_videos": sorted(set(train["video_id"])
                                                             - set(held["video_id"]))}))
        path = tmp_path / f"fold{fold}.h5"
        with FeaturesFile.create(path, {"model_info": str(record)}) as f:
            for v, label in zip(samples["video_id"], samples["label"]):
                f.write_video(v, (rng.normal(size=(2, 3)) + 3 * (label == "x"))
                              .astype(np.float32))
        files[fold] = str(path)
    fits, _ = spied(monkeypatch)
    settings = Settings(fusion="scores", weights="stacking", C=(0.1, 1.0))
    result, _ = evaluate.run(samples, {"cnn": files, "hog": files}, ["x", "y"], settings)
    trained = {fold: set(json.loads((tmp_path / f"fold{fold}.json").read_text())
                         ["train_videos"]) for fold in (0, 1)}
    ids = samples["video_id"].to_numpy()
    inner = [(f, s) for f, s in fits if len(s) < 16]  # the refits score the 16 test videos
    assert inner
    for fit_idx, score_idx in inner:
        fold = 1 - samples["fold"][fit_idx[0]]  # an outer fold trains on the other's videos
        assert not set(ids[score_idx]) & trained[fold]  # validated on held-out videos only
    assert all(c["validated_on"] == "8 videos no network was trained on"
               for c in result["chosen"])
    (tmp_path / "fold0.json").unlink()
    with pytest.raises(ValueError, match=r"fold0.h5: its model record .*fold0.json is missing"):
        evaluate.run(samples, {"cnn": files}, ["x", "y"], settings)


def features_file(path, samples, rng, segments=2, skip=()):
    """Features of every video of ``samples`` but ``skip``, informative of the label."""
    with FeaturesFile.create(path, {}) as f:
        for v, label in zip(samples["video_id"], samples["label"]):
            if v not in skip:
                n = segments(v) if callable(segments) else segments
                f.write_video(v, rng.normal(size=(n, 3)) + 3 * (label == "x"))
    return str(path)


def test_a_fold_whose_test_videos_all_failed_is_reported_not_silently_dropped(tmp_path, caplog):
    samples = pd.DataFrame([{"video_id": f"v{s}_{k}", "subject": f"S{s}",
                             "label": "x" if k % 2 else "y", "fold": s % 3}
                            for s in range(6) for k in range(4)])
    failed = set(samples.loc[samples["fold"] == 1, "video_id"])
    path = features_file(tmp_path / "f.h5", samples, np.random.default_rng(0), skip=failed)
    result, _ = evaluate.run(samples, {"hog": {k: path for k in range(3)}}, ["x", "y"],
                             Settings())
    assert [f["fold"] for f in result["folds"]] == [0, 2]
    assert result["folds_without_videos"] == [1]
    assert sorted(result["excluded_videos"]) == sorted(failed)
    assert "folds [1] are left out" in caplog.text
    with pytest.raises(ValueError, match=r"no test video has features in every features file "
                                         r"\(24 videos left out, e\.g\. \['v0_0'"):
        evaluate.run(samples, {"hog": {k: features_file(tmp_path / "none.h5", samples,
                                                        np.random.default_rng(0),
                                                        skip=set(samples["video_id"]))
                                       for k in range(3)}}, ["x", "y"], Settings())


def test_segment_level_fusion_refuses_streams_whose_segments_differ(tmp_path):
    samples = pd.DataFrame([{"video_id": f"v{s}_{k}", "subject": f"S{s}",
                             "label": "x" if k % 2 else "y", "fold": s % 2}
                            for s in range(4) for k in range(4)])
    rng = np.random.default_rng(0)
    a = features_file(tmp_path / "a.h5", samples, rng, segments=3)
    b = features_file(tmp_path / "b.h5", samples, rng,
                      segments=lambda v: 2 if v == "v1_2" else 3)
    files = {"a": {0: a, 1: a}, "b": {0: b, 1: b}}
    settings = Settings(aggregate="mean_scores")
    with pytest.raises(ValueError, match="v1_2: 3 segments in stream a, 2 in b"):
        evaluate.run(samples, files, ["x", "y"], settings)
    files["b"] = {0: a, 1: a}
    result, _ = evaluate.run(samples, files, ["x", "y"], settings)
    assert result["mean"]["accuracy"]["mean"] > 0.9
    # averaged per video first, the streams' segments need not match
    files["b"] = {0: b, 1: b}
    evaluate.run(samples, files, ["x", "y"], Settings())


def test_model_selection_without_inner_folds_warns_and_ties_keep_the_smaller_c(caplog):
    assert [p["C"] for p in Settings(C=(10.0, 0.1, 1.0)).grid()] == [0.1, 1.0, 10.0]
    streams, y, subjects = video_data(3)
    test = np.flatnonzero(subjects != "S0")  # one training subject: no inner folds
    train = np.flatnonzero(subjects == "S0")
    exp = Experiment(Settings(C=(10.0, 0.1)), 2)
    _, chosen = exp.fit_predict(exp.prepare(streams), y, subjects, train, test)
    assert chosen["params"]["C"] == 0.1 and chosen["inner_folds"] == 0
    assert "no inner folds of the training subjects" in caplog.text
