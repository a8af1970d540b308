"""Leakage audit: labels that depend on the subject only must score at chance under the
subject-independent protocol, while a random video-level split of the same data scores far
above chance (so the audit can fail)."""

import numpy as np
import pandas as pd
import pytest

from tests.conftest import stage_defaults
from vfer import demo, evaluate, faces, features, segments
from vfer.folds import assign_folds

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def identity_dataset(tmp_path_factory):
    """10 synthetic subjects, 6 clips each showing anger, happiness or surprise; the label is
    the subject's (odd subjects 'anger', even 'happiness'), so only identity predicts it."""
    root = tmp_path_factory.mktemp("audit")
    table = demo.generate(root, seed=11, subjects=10, clips=2,
                          classes=("anger", "happiness", "surprise"), processes=2)
    samples = pd.read_csv(table, sep="\t", dtype=str)
    samples["label"] = ["anger" if int(s[1:]) % 2 else "happiness" for s in samples["subject"]]
    videos = [(v, str(root / p)) for v, p in zip(samples["video_id"], samples["path"])]
    faces.process_shard(videos, str(root / "faces.h5"), str(root / "failures.tsv"),
                        str(root / "sheet.png"), stage_defaults("faces"), {})
    segments.process_shard(str(root / "faces.h5"), str(root / "segments.h5"),
                           stage_defaults("segments"), {})
    shard = [{"faces": str(root / "faces.h5"), "segments": str(root / "segments.h5")}]
    for name, descriptor in (("hog", "hog"), ("landmarks", "landmarks")):
        model = {"name": name, "kind": "descriptor", "descriptor": descriptor, "diff": "hog"}
        features.describe(model, shard, str(root / f"{name}.h5"), {})
    return samples, str(root / "hog.h5"), str(root / "landmarks.h5")


def test_subject_labels_score_at_chance_only_under_the_subject_independent_protocol(identity_dataset):
    samples, hog, _ = identity_dataset
    classes = ["anger", "happiness"]
    files = {"handcrafted": {k: hog for k in range(5)}}
    chance = samples["label"].value_counts(normalize=True).max()  # 0.5

    independent = assign_folds(samples, "losgo", groups=5, seed=0)
    result, _ = evaluate.run(independent, files, classes, evaluate.Settings())
    assert result["pooled"]["accuracy"] <= chance + 0.15

    leaky = samples[["video_id", "subject", "label"]].copy()
    leaky["fold"] = np.random.default_rng(0).permutation(len(leaky)) % 5  # ignores subjects
    with pytest.raises(ValueError, match="not subject-independent"):
        evaluate.run(leaky, files, classes, evaluate.Settings())
    result, _ = evaluate.run(leaky, files, classes, evaluate.Settings(), subject_independent=False)
    assert result["pooled"]["accuracy"] >= 0.9  # identity alone predicts the label


FUSIONS = {
    "concat_select": evaluate.Settings(select=True, C=(0.1, 1.0)),
    "stacking": evaluate.Settings(fusion="scores", weights="stacking", C=(0.1, 1.0)),
}


@pytest.mark.parametrize("name", FUSIONS)
def test_stream_selection_and_stacking_fit_on_training_subjects_only(identity_dataset,
                                                                      monkeypatch, name):
    """Every classifier that selection or stacking fits, inner or final, is fitted on videos of
    subjects other than those it scores, over every fold of a repeated protocol; a leaky split
    shows up at once in the same record."""
    samples, hog, landmarks = identity_dataset
    classes = ["anger", "happiness"]
    calls = []
    original = evaluate.Experiment._fit_scores

    def spy(self, streams, y, fit_idx, score_idx, *args):
        calls.append((np.array(fit_idx), np.array(score_idx)))
        return original(self, streams, y, fit_idx, score_idx, *args)

    monkeypatch.setattr(evaluate.Experiment, "_fit_scores", spy)
    independent = assign_folds(samples, "kfold", folds=5, seed=0, repeats=2)
    files = {s: {k: path for k in range(10)} for s, path in (("handcrafted", hog),
                                                             ("landmarks", landmarks))}
    result, _ = evaluate.run(independent, files, classes, FUSIONS[name])
    assert len(result["folds"]) == 10
    assert result["pooled"]["accuracy"] <= 0.5 + 0.15
    subjects = samples["subject"].to_numpy()  # run's videos are in the table's order
    assert calls and all(not set(subjects[f]) & set(subjects[s]) for f, s in calls)

    calls.clear()
    leaky = samples[["video_id", "subject", "label"]].copy()
    leaky["fold"] = np.random.default_rng(0).permutation(len(leaky)) % 5  # ignores subjects
    result, _ = evaluate.run(leaky, {s: {k: f[0] for k in range(5)} for s, f in files.items()},
                             classes, FUSIONS[name], subject_independent=False)
    assert any(set(subjects[f]) & set(subjects[s]) for f, s in calls)
