import pandas as pd
import pytest

from vfer.folds import assign_folds, subject_groups, evaluation_folds, train_test


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
        train, test = train_test(folds, fold)
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
