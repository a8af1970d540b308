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
    model = {"name": "handcrafted", "kind": "descriptor", "descriptor": "hog", "diff": "hog"}
    features.describe(model, [{"faces": str(root / "faces.h5"),
                               "segments": str(root / "segments.h5")}], str(root / "hog.h5"), {})
    return samples, str(root / "hog.h5")


def test_subject_labels_score_at_chance_only_under_the_subject_independent_protocol(identity_dataset):
    samples, hog = identity_dataset
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
