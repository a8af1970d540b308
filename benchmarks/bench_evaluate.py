"""Evaluation stage against its kernel floor: evaluate.run for the demo's fused experiments
(load features, nested selection of C on training subjects, score fusion weights, metrics)
against the library work it does, each call recorded during the run and replayed alone on the
same arrays: the h5py reads of the features and the scikit-learn scaling, projection, SVM fits
and scorings."""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import Row, compare, demo_config, demo_plan
from vfer import evaluate
from vfer.evaluate import FeatureModel, Settings
from vfer.folds import read_folds

TARGET = 1.2


def recorded_run(folds, files, classes, settings) -> list:
    """The feature reads and FeatureModel fits and scorings that evaluate.run makes."""
    calls, fit, scores, load = [], FeatureModel.fit, FeatureModel.scores, evaluate.load_features

    def record_load(path, video_ids):
        calls.append(("load", None, None, (path, video_ids), None, None))
        return load(path, video_ids)

    def record_fit(self, blocks, y, n_classes):
        calls.append(("fit", id(self), (self.s, self.fusion, self.C, self.gamma), blocks, y,
                      n_classes))
        return fit(self, blocks, y, n_classes)

    def record_scores(self, blocks):
        calls.append(("scores", id(self), None, blocks, None, None))
        return scores(self, blocks)

    FeatureModel.fit, FeatureModel.scores = record_fit, record_scores
    evaluate.load_features = record_load
    try:
        evaluate.run(folds, files, classes, settings)
    finally:
        FeatureModel.fit, FeatureModel.scores, evaluate.load_features = fit, scores, load
    return calls


def replay(calls) -> None:
    models = {}
    for kind, key, args, blocks, y, n_classes in calls:
        if kind == "load":
            evaluate.load_features(*blocks)
        elif kind == "fit":
            models[key] = FeatureModel(*args).fit(blocks, y, n_classes)
        else:
            models[key].scores(blocks)


def measure(run: Path, repeat: int = 3) -> list[Row]:
    config = demo_config()
    plan = demo_plan()
    folds = read_folds(str(run / "results/folds.tsv"))
    fold_ids = sorted(f for f in folds["fold"].unique() if f >= 0)
    rows = []
    for experiment in plan.experiments.values():
        if len(experiment["streams"]) < 2 or experiment["classifier"]["kind"] == "softmax":
            continue
        settings = Settings.from_config(experiment, config["aggregate"], config["seed"])
        files = {s: {f: str(run / "results/features" / s / (
            f"fold{f}.h5" if plan.models[s]["finetune"] == "per_fold" else "all.h5"))
            for f in fold_ids} for s in experiment["streams"]}
        calls = recorded_run(folds, files, config["classes"], settings)
        stage, bare, ratio = compare(
            lambda: evaluate.run(folds, files, config["classes"], settings),
            lambda: replay(calls), repeat)
        name = experiment["name"]
        rows += [Row("evaluate", f"{name}: stage seconds ({sum(k == 'fit' for k, *_ in calls)} "
                     f"model fits)", stage, "s"),
                 Row("evaluate", f"{name}: bare h5py reads + scikit-learn seconds", bare, "s"),
                 Row("evaluate", f"{name}: stage / kernel floor", ratio, "x", TARGET,
                     f"median of {repeat} interleaved runs; the stage also splits, aggregates, "
                     "scores metrics")]
    return rows
