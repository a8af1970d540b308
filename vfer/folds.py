"""Subject-independent evaluation folds: every video of a subject is in the same test fold."""

from __future__ import annotations

import numpy as np
import pandas as pd


def subject_groups(subjects, n_groups: int, seed: int) -> dict[str, int]:
    """Assign each subject to one of ``n_groups`` groups: a seeded shuffle, then round robin."""
    unique = sorted(set(subjects))
    if n_groups < 2:
        raise ValueError("a subject-independent protocol needs at least 2 groups")
    if len(unique) < n_groups:
        raise ValueError(f"{len(unique)} subjects cannot form {n_groups} subject groups")
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[j]: int(i % n_groups) for i, j in enumerate(order)}


def assign_folds(samples: pd.DataFrame, protocol: str, groups: int = 5, seed: int = 0) -> pd.DataFrame:
    """Table video_id, subject, label, fold: ``fold`` is the fold whose test set holds the video.

    Protocols: ``losgo`` (leave one subject group out, ``groups`` groups) and ``loso`` (leave
    one subject out).
    """
    subjects = samples["subject"].astype(str)
    if protocol == "loso":
        mapping = {s: i for i, s in enumerate(sorted(set(subjects)))}
    elif protocol == "losgo":
        mapping = subject_groups(subjects, groups, seed)
    else:
        raise ValueError(f"unknown protocol {protocol!r}")
    out = samples[["video_id", "subject", "label"]].copy()
    out["subject"] = subjects
    out["fold"] = subjects.map(mapping).astype(int)
    return out.reset_index(drop=True)


def train_test(folds: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows used for training and for testing in ``fold``."""
    test = folds["fold"] == fold
    return folds[~test], folds[test]
