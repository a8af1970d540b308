"""Subject-independent evaluation folds: every video of a subject is in the same test fold.

Protocols (``protocol.name``):

* ``losgo``: leave one subject group out; ``groups`` groups of subjects (a seeded shuffle of
  the subjects dealt round robin, so group sizes differ by at most one subject);
* ``loso``: leave one subject out;
* ``kfold``: ``folds`` subject-grouped folds balanced by number of videos (largest subject
  first into the fold with fewest videos, as scikit-learn's GroupKFold);
* ``split``: the samples table's ``split`` column: ``test`` rows form the one test fold,
  ``train`` rows train, ``val`` rows are the training side's validation set.

The folds table has one row per video: video_id, subject, label, fold (the fold whose test set
holds the video; -1 for videos that are never tested) and, for ``split``, the split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PROTOCOLS = ("losgo", "loso", "kfold", "split")


def subject_groups(subjects, n_groups: int, seed: int) -> dict[str, int]:
    """Assign each subject to one of ``n_groups`` groups: a seeded shuffle, then round robin."""
    unique = sorted(set(subjects))
    if n_groups < 2:
        raise ValueError("a subject-independent protocol needs at least 2 groups")
    if len(unique) < n_groups:
        raise ValueError(f"{len(unique)} subjects cannot form {n_groups} subject groups")
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[j]: int(i % n_groups) for i, j in enumerate(order)}


def balanced_groups(subjects, n_folds: int) -> dict[str, int]:
    """Subjects into ``n_folds`` folds with nearly equal numbers of videos (deterministic)."""
    counts = pd.Series(list(subjects)).value_counts()
    if len(counts) < n_folds:
        raise ValueError(f"{len(counts)} subjects cannot form {n_folds} subject-grouped folds")
    order = sorted(counts.index, key=lambda s: (-counts[s], s))
    load = np.zeros(n_folds, int)
    mapping = {}
    for s in order:
        k = int(np.argmin(load))
        mapping[s] = k
        load[k] += counts[s]
    return mapping


def assign_folds(samples: pd.DataFrame, protocol: str, groups: int = 5, seed: int = 0,
                 folds: int = 10) -> pd.DataFrame:
    """The folds table (see the module docstring) of a samples table."""
    subjects = samples["subject"].astype(str)
    out = samples[["video_id", "subject", "label"]].copy()
    out["subject"] = subjects
    if protocol == "split":
        if "split" not in samples.columns:
            raise ValueError("protocol split needs a 'split' column (train, val, test)")
        split = samples["split"].astype(str)
        bad = sorted(set(split) - {"train", "val", "test"})
        if bad:
            raise ValueError(f"split column values must be train, val or test, found {bad}")
        if not (split == "test").any() or not (split == "train").any():
            raise ValueError("protocol split needs both train and test rows")
        out["fold"] = np.where(split == "test", 0, -1)
        out["split"] = split.to_numpy()
        return out.reset_index(drop=True)
    if protocol == "loso":
        mapping = {s: i for i, s in enumerate(sorted(set(subjects)))}
    elif protocol == "losgo":
        mapping = subject_groups(subjects, groups, seed)
    elif protocol == "kfold":
        mapping = balanced_groups(subjects, folds)
    else:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    if len(set(mapping.values())) < 2:
        raise ValueError("a subject-independent protocol needs at least 2 subjects")
    out["fold"] = subjects.map(mapping).astype(int)
    return out.reset_index(drop=True)


def evaluation_folds(folds: pd.DataFrame) -> list[int]:
    """The folds that have test videos."""
    return sorted(int(f) for f in folds["fold"].unique() if f >= 0)


def train_test(folds: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows used for training (everything not in the fold's test set) and for testing."""
    test = folds["fold"] == fold
    return folds[~test], folds[test]


def read_folds(path: str) -> pd.DataFrame:
    """The folds table written by the folds rule (video_id, subject, label, fold[, split]).

    Ids stay exact text (subject ``NA`` or ``007`` is neither missing nor the number 7); ``fold``
    is an int.
    """
    folds = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    folds["fold"] = folds["fold"].astype(int)
    return folds
