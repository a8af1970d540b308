import pandas as pd
import pytest

import numpy as np

from vfer.folds import assign_folds, evaluation_folds, fold_rows, read_folds, subject_groups


def table(n_subjects=7, per_subject=3):
    rows = [{"video_id": f"v{s}_{k}", "subject": f"S{s}", "label": "anger" if k % 2 else "happiness"}
            for s in range(n_subjects) for k in range(per_subject)]
    return pd.DataFrame(rows)


def test_groups_keep_each_subject_in_one_test_fold():
    folds = assign_folds(table(), "losgo", groups=5, seed=3)
    assert folds.groupby("subject")["fold"].nunique().max() == 1
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    sizes = folds.groupby("fold")["subject"].nunique()
    assert sizes.max() - sizes.min() <= 1  # 7 subjects in 5 groups: 2, 2, 1, 1, 1
    for fold in range(5):
        train, test = fold_rows(folds, fold)
        assert not set(train["subject"]) & set(test["subject"])
        assert len(train) + len(test) == len(folds)


def test_groups_are_deterministic_and_depend_on_the_seed():
    subjects = [f"S{i}" for i in range(10)]
    assert subject_groups(subjects, 5, 0) == subject_groups(list(reversed(subjects)), 5, 0)
    assert subject_groups(subjects, 5, 0) != subject_groups(subjects, 5, 1)


def test_leave_one_subject_out_and_errors():
    folds = assign_folds(table(4), "loso")
    assert folds.groupby("fold")["subject"].nunique().tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="3 subjects cannot form 5 subject groups"):
        assign_folds(table(3), "losgo", groups=5)


def test_kfold_balances_videos_and_split_uses_the_column():
    rows = [{"video_id": f"v{i}", "subject": s, "label": "anger"}
            for i, s in enumerate(["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"] * 2)]
    folds = assign_folds(pd.DataFrame(rows), "kfold", folds=2)
    assert folds.groupby("fold").size().tolist() == [7, 5]  # 5+2 and 3+2: no split gives 6+6
    assert folds.groupby("subject")["fold"].nunique().max() == 1
    table = pd.DataFrame({"video_id": list("abcd"), "subject": list("wxyz"), "label": ["anger"] * 4,
                          "split": ["train", "val", "test", "train"]})
    split = assign_folds(table, "split")
    assert split["fold"].tolist() == [-1, -1, 0, -1]
    assert evaluation_folds(split) == [0]
    with pytest.raises(ValueError, match="values must be train, val or test"):
        assign_folds(table.assign(split=["train", "dev", "test", "train"]), "split")
    with pytest.raises(ValueError, match="split: subject 'w' has test rows and train or val"):
        assign_folds(table.assign(subject=list("wxwz")), "split")


def uneven(n_subjects=12, seed=0):
    """Subjects with 2 to 6 videos each."""
    sizes = np.random.default_rng(seed).integers(2, 7, n_subjects)
    return pd.DataFrame([{"video_id": f"v{s}_{k}", "subject": f"S{s:02d}", "label": "anger"}
                         for s in range(n_subjects) for k in range(sizes[s])])


def test_repeated_kfold_one_repeat_is_todays_table_exactly():
    samples = uneven()
    once = assign_folds(samples, "kfold", folds=4, seed=3, repeats=1)
    assert once.equals(assign_folds(samples, "kfold", folds=4, seed=3))
    assert "repeat" not in once and sorted(once["fold"].unique()) == [0, 1, 2, 3]


def test_repeated_kfold_repetitions_are_subject_independent_balanced_and_different(tmp_path):
    samples = uneven()
    folds = assign_folds(samples, "kfold", folds=4, seed=3, repeats=5)
    assert len(folds) == 5 * len(samples)
    assert folds.groupby("repeat")["video_id"].apply(sorted).map(tuple).nunique() == 1
    assert evaluation_folds(folds) == list(range(20))
    assert (folds["fold"] // 4 == folds["repeat"]).all()  # global id r * folds + k
    partitions = set()
    for r, rep in folds.groupby("repeat"):
        assert rep.groupby("subject")["fold"].nunique().max() == 1
        sizes = rep.groupby("fold").size()
        assert sizes.max() - sizes.min() <= 6  # within one subject's videos
        partitions.add(frozenset(frozenset(g) for g in rep.groupby("fold")["subject"].unique()
                                 .map(tuple)))
    assert len(partitions) == 5  # every repetition a different partition
    for fold in range(20):
        train, test = fold_rows(folds, fold)
        assert (train["repeat"] == fold // 4).all() and (test["repeat"] == fold // 4).all()
        assert not set(train["subject"]) & set(test["subject"])
        assert len(train) + len(test) == len(samples)  # the rest of its own repetition
    path = tmp_path / "folds.tsv"
    folds.to_csv(path, sep="\t", index=False)
    back = read_folds(str(path))
    assert back["repeat"].dtype.kind == "i" and back["fold"].tolist() == folds["fold"].tolist()
    again = assign_folds(samples, "kfold", folds=4, seed=3, repeats=5)
    assert again.equals(folds)  # seeded
    assert not assign_folds(samples, "kfold", folds=4, seed=4, repeats=5).equals(folds)


def test_repeats_need_kfold_and_enough_partitions():
    with pytest.raises(ValueError, match="protocol kfold repeats its partition"):
        assign_folds(uneven(), "losgo", groups=3, repeats=2)
    two = pd.DataFrame({"video_id": ["a", "b"], "subject": ["x", "y"], "label": ["anger"] * 2})
    with pytest.raises(ValueError, match="found only 1 different partitions in 100 draws, not 2"):
        assign_folds(two, "kfold", folds=2, repeats=2)
