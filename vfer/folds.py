"""Subject-independent evaluation folds: every video of a subject is in the same test fold.

Protocols (``protocol.name``):

* ``losgo``: leave one subject group out; ``groups`` groups of subjects (a seeded shuffle of
  the subjects dealt round robin, so group sizes differ by at most one subject);
* ``loso``: leave one subject out;
* ``kfold``: ``folds`` subject-grouped folds balanced by number of videos (largest subject
  first into the fold with fewest videos, as scikit-learn's GroupKFold); ``repeats`` R > 1
  adds R - 1 further partitions, each a seeded shuffle of the subjects dealt one by one into
  the fold with fewest videos (paper 003: 10 x 4), every one different from the others;
* ``split``: the samples table's ``split`` column: ``test`` rows form the one test fold,
  ``train`` rows train, ``val`` rows are the training side's validation set.

The folds table has one row per video: video_id, subject, label, fold (the fold whose test set
holds the video; -1 for videos that are never tested) and, for ``split``, the split. With
repeats it has one row per (video, repetition): a ``repeat`` column r and the global fold id
r * folds + k; a fold trains on the rows of its own repetition only (``fold_rows``).
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


def balanced_groups(subjects, n_folds: int, rng: np.random.Generator | None = None
                    ) -> dict[str, int]:
    """Subjects into ``n_folds`` folds with nearly equal numbers of videos. Without ``rng``
    deterministic (largest subject first, each into the fold with fewest videos); with it, the
    subjects come in a random order and ties between folds are broken at random."""
    counts = pd.Series(list(subjects)).value_counts()
    if len(counts) < n_folds:
        raise ValueError(f"{len(counts)} subjects cannot form {n_folds} subject-grouped folds")
    order = sorted(counts.index, key=lambda s: (-counts[s], s))
    if rng is not None:
        order = [order[i] for i in rng.permutation(len(order))]
    load = np.zeros(n_folds, int)
    mapping = {}
    for s in order:
        least = np.flatnonzero(load == load.min())
        k = int(least[0] if rng is None else rng.choice(least))
        mapping[s] = k
        load[k] += counts[s]
    return mapping


def _partition(mapping: dict[str, int]) -> frozenset:
    """A fold assignment as a set of subject sets (fold numbering does not matter)."""
    folds: dict[int, set] = {}
    for s, k in mapping.items():
        folds.setdefault(k, set()).add(s)
    return frozenset(frozenset(v) for v in folds.values())


def repeated_groups(subjects, n_folds: int, repeats: int, seed: int,
                    draws: int = 100) -> list[dict[str, int]]:
    """``repeats`` different subject-grouped partitions balanced by videos: the deterministic
    one first, then seeded ones (seed, r) that differ from every earlier partition."""
    out = [balanced_groups(subjects, n_folds)]
    seen = {_partition(out[0])}
    for r in range(1, repeats):
        rng = np.random.default_rng([seed, r])
        for _ in range(draws):
            mapping = balanced_groups(subjects, n_folds, rng)
            if _partition(mapping) not in seen:
                break
        else:
            raise ValueError(f"{len(set(subjects))} subjects in {n_folds} folds: found only "
                             f"{len(seen)} different partitions in {draws} draws, not {repeats}")
        seen.add(_partition(mapping))
        out.append(mapping)
    return out


def assign_folds(samples: pd.DataFrame, protocol: str, groups: int = 5, seed: int = 0,
                 folds: int = 10, repeats: int = 1) -> pd.DataFrame:
    """The folds table (see the module docstring) of a samples table."""
    if repeats < 1 or (repeats > 1 and protocol != "kfold"):
        raise ValueError(f"repeats {repeats}: protocol kfold repeats its partition (repeats "
                         f">= 1); {protocol} has one")
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
        both = sorted(set(subjects[split == "test"]) & set(subjects[split != "test"]))
        if both:
            raise ValueError(f"protocol split: subject {both[0]!r} has test rows and train or "
                             f"val rows ({len(both)} such subjects); the evaluation is "
                             "subject-independent")
        out["fold"] = np.where(split == "test", 0, -1)
        out["split"] = split.to_numpy()
        return out.reset_index(drop=True)
    if "split" in samples.columns and (samples["split"].astype(str).str.strip() != "").any():
        raise ValueError(f"the samples table has a split column (train, val, test rows; AFEW's "
                         f"official partition): protocol {protocol} would mix its rows across "
                         "folds; use protocol: split, or remove the column")
    if protocol == "loso":
        mapping = {s: i for i, s in enumerate(sorted(set(subjects)))}
    elif protocol == "losgo":
        mapping = subject_groups(subjects, groups, seed)
    elif protocol == "kfold":
        if repeats > 1:
            return _repeated(out, repeated_groups(subjects, folds, repeats, seed), folds)
        mapping = balanced_groups(subjects, folds)
    else:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    if len(set(mapping.values())) < 2:
        raise ValueError("a subject-independent protocol needs at least 2 subjects")
    out["fold"] = subjects.map(mapping).astype(int)
    return out.reset_index(drop=True)


def _repeated(base: pd.DataFrame, mappings: list[dict[str, int]], n_folds: int) -> pd.DataFrame:
    """One block of rows per repetition r, with fold ids r * n_folds + k."""
    parts = []
    for r, mapping in enumerate(mappings):
        part = base.copy()
        part["fold"] = r * n_folds + part["subject"].map(mapping).astype(int)
        part["repeat"] = r
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def evaluation_folds(folds: pd.DataFrame) -> list[int]:
    """The folds that have test videos."""
    return sorted(int(f) for f in folds["fold"].unique() if f >= 0)


def fold_rows(folds: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, test rows) of ``fold``: its test set, and every other row of the same
    repetition (all other rows when the table has no ``repeat`` column)."""
    test = folds["fold"] == fold
    if not test.any():
        raise ValueError(f"fold {fold} has no test videos in the folds table")
    train = ~test
    if "repeat" in folds:
        repeat = folds.loc[test, "repeat"].unique()
        if len(repeat) != 1:
            raise ValueError(f"fold {fold} spans repetitions {sorted(repeat)}")
        train &= folds["repeat"] == repeat[0]
    return folds[train], folds[test]


def read_folds(path: str) -> pd.DataFrame:
    """The folds table written by the folds rule (video_id, subject, label, fold[, split]
    [, repeat]).

    Ids stay exact text (subject ``NA`` or ``007`` is neither missing nor the number 7); ``fold``
    and ``repeat`` are ints.
    """
    folds = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    folds["fold"] = folds["fold"].astype(int)
    if "repeat" in folds:
        folds["repeat"] = folds["repeat"].astype(int)
    return folds
