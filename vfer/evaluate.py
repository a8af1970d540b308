"""Subject-independent evaluation of an experiment: fusion, SVM, nested model selection.

For every outer fold, everything is fitted on the fold's training videos only: the per-stream
standardisation, the projection to a common dimension (PCA, for sum and product fusion of
streams of different dimension), the classifier and its hyper-parameters (C, gamma: chosen by
inner cross-validation over groups of *training* subjects, or on the ``val`` rows of a
predefined split), and the score-fusion weights (same inner cross-validation).

* Feature fusion (``concat``, ``sum``, ``product``): fuse the standardised stream features,
  one classifier.
* Score fusion (``scores``): one classifier per stream with class probabilities; their mean
  (``weights: mean``) or a weighted mean with weights on the simplex (step 0.1) that minimise
  the log loss of the inner cross-validation predictions (``weights: learned``).
* Segments to videos (``aggregate``): ``mean_features`` averages a video's segment features
  before classification; ``mean_scores`` classifies segments (each with its video's label)
  and averages their scores per video.
* A network's own softmax (``kind: softmax``): nothing is fitted here; each video's score is
  the mean of its segments' class probabilities from the fold's network (several networks:
  the mean of their scores).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, f1_score, recall_score
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from vfer.fusion import fuse
from vfer.store import FeaturesFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """How an experiment is evaluated (classifier, selection grid, fusion, aggregation)."""

    fusion: str = "concat"
    weights: str = "mean"  # score fusion: mean or learned
    aggregate: str = "mean_features"
    kind: str = "svc"  # svc, linear_svc, logistic or softmax
    kernel: str = "linear"
    C: tuple = (1.0,)
    gamma: tuple = ("scale",)
    class_weight: str | None = None
    inner_folds: int = 3
    seed: int = 0

    @classmethod
    def from_config(cls, experiment: dict, aggregate: str, seed: int) -> Settings:
        """Settings of one resolved experiment (vfer.config.Plan.experiments)."""
        classifier = experiment["classifier"]
        return cls(fusion=experiment["fusion"], weights=experiment["weights"],
                   aggregate=aggregate, kind=classifier["kind"], kernel=classifier["kernel"],
                   C=tuple(classifier["C"]), gamma=tuple(classifier["gamma"]),
                   class_weight=classifier["class_weight"],
                   inner_folds=classifier["inner_folds"], seed=seed)

    def grid(self) -> list[dict]:
        gammas = self.gamma if self.kind == "svc" and self.kernel == "rbf" else ("scale",)
        return [{"C": float(c), "gamma": g} for c in self.C for g in gammas]


def make_classifier(s: Settings, C: float, gamma, probability: bool = False):
    """The configured classifier; with ``probability`` an SVM is wrapped in a sigmoid
    calibration fitted by 3-fold cross-validation on the same (training) data."""
    if s.kind == "logistic":
        return LogisticRegression(C=C, class_weight=s.class_weight, max_iter=5000)
    if s.kind == "linear_svc":
        clf = LinearSVC(C=C, class_weight=s.class_weight, random_state=s.seed, max_iter=20000)
    elif s.kind == "svc":
        clf = SVC(kernel=s.kernel, C=C, gamma=gamma, class_weight=s.class_weight,
                  decision_function_shape="ovr", random_state=s.seed)
    else:
        raise ValueError(f"unknown classifier {s.kind!r}")
    return CalibratedClassifierCV(clf, method="sigmoid", cv=3, ensemble=False) if probability \
        else clf


def class_scores(clf, x: np.ndarray, n_classes: int, probability: bool) -> np.ndarray:
    """Scores for every class (NaN for classes the classifier never saw)."""
    out = np.full((len(x), n_classes), np.nan)
    if probability:
        out[:, clf.classes_] = clf.predict_proba(x)
        return np.nan_to_num(out, nan=0.0)
    d = clf.decision_function(x)
    if d.ndim == 1:  # two classes: one column
        d = np.stack([-d, d], axis=1)
    out[:, clf.classes_] = d
    return out


class FeatureModel:
    """Standardise each stream, project to a common dimension if needed, fuse, classify."""

    def __init__(self, s: Settings, fusion: str, C: float, gamma, probability: bool = False):
        self.s, self.fusion, self.C, self.gamma, self.probability = s, fusion, C, gamma, probability

    def fit(self, blocks: list[np.ndarray], y: np.ndarray, n_classes: int) -> FeatureModel:
        self.n_classes = n_classes
        self.scalers = [StandardScaler().fit(b) for b in blocks]
        z = [sc.transform(b) for sc, b in zip(self.scalers, blocks)]
        self.pcas = None
        dims = {b.shape[1] for b in z}
        if self.fusion in ("sum", "product") and len(dims) > 1:
            d = min(min(dims), len(y) - 1)
            self.pcas = [PCA(n_components=d, random_state=self.s.seed).fit(b) for b in z]
            z = [p.transform(b) for p, b in zip(self.pcas, z)]
        self.clf = make_classifier(self.s, self.C, self.gamma, self.probability)
        self.clf.fit(fuse(z, self.fusion), y)
        return self

    def scores(self, blocks: list[np.ndarray]) -> np.ndarray:
        z = [sc.transform(b) for sc, b in zip(self.scalers, blocks)]
        if self.pcas is not None:
            z = [p.transform(b) for p, b in zip(self.pcas, z)]
        return class_scores(self.clf, fuse(z, self.fusion), self.n_classes, self.probability)


def inner_splits(subjects: np.ndarray, labels: np.ndarray, n_splits: int, seed: int,
                 split: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner (fit, validation) index pairs over the *training* videos given: subject-grouped
    folds, or the predefined train/val rows when ``split`` has val rows. A pair whose fit part
    holds a single class cannot train a classifier and is left out (a subject with one video
    can make such a pair). Empty when the training videos cannot be split (a single subject)."""
    if split is not None and (split == "val").any():
        pairs = [(np.flatnonzero(split != "val"), np.flatnonzero(split == "val"))]
    else:
        unique = sorted(set(subjects))
        k = min(n_splits, len(unique))
        if k < 2:
            return []
        order = np.random.default_rng(seed).permutation(len(unique))
        group = {unique[j]: i % k for i, j in enumerate(order)}
        g = np.array([group[s] for s in subjects])
        pairs = [(np.flatnonzero(g != i), np.flatnonzero(g == i)) for i in range(k)]
    return [(fit, val) for fit, val in pairs if len(set(labels[fit])) > 1]


def simplex(n: int, step: float = 0.1) -> np.ndarray:
    """All weight vectors of length n on the grid of ``step`` with w >= 0 and sum 1."""
    m = int(round(1 / step))
    points = [c for c in itertools.product(range(m + 1), repeat=n) if sum(c) == m]
    return np.array(points, np.float64) / m


class Experiment:
    """Fits and applies one experiment's model on a fold's training videos."""

    def __init__(self, s: Settings, n_classes: int):
        self.s, self.n_classes = s, n_classes

    # -- samples ----------------------------------------------------------------------------
    def prepare(self, streams: list[list[np.ndarray]]) -> list:
        """Per stream what the samples are drawn from: with ``mean_features`` each video's
        mean segment feature (N x D, computed once), else the videos' segment features."""
        if self.s.aggregate != "mean_features":
            return streams
        return [v if isinstance(v, np.ndarray) else np.stack([x.mean(0) for x in v])
                for v in streams]

    def _samples(self, streams: list, idx: np.ndarray) -> tuple[list, np.ndarray]:
        """Sample matrices per stream for videos ``idx`` and each sample's position in idx."""
        if self.s.aggregate == "mean_features":
            return [v[idx] for v in streams], np.arange(len(idx))
        owner = np.concatenate([np.full(len(streams[0][i]), k) for k, i in enumerate(idx)])
        return [np.concatenate([v[i] for i in idx]) for v in streams], owner

    def _video_scores(self, sample_scores: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
        out = np.zeros((n, sample_scores.shape[1]))
        np.add.at(out, owner, sample_scores)
        return out / np.bincount(owner, minlength=n)[:, None]

    def _fit_scores(self, streams, y, fit_idx, score_idx, fusion, params, probability) -> np.ndarray:
        """Video scores for ``score_idx`` from a model fitted on ``fit_idx``."""
        xs, owner = self._samples(streams, fit_idx)
        model = FeatureModel(self.s, fusion, params["C"], params["gamma"], probability)
        model.fit(xs, y[fit_idx][owner], self.n_classes)
        xt, owner_t = self._samples(streams, score_idx)
        return self._video_scores(model.scores(xt), owner_t, len(score_idx))

    # -- model selection ------------------------------------------------------------------------
    def _select(self, streams, y, train_idx, inner, fusion, probability) -> tuple[dict, list]:
        grid = self.s.grid()
        if len(grid) == 1 or not inner:
            return grid[0], []
        table = []
        for params in grid:
            correct = 0
            for fit, val in inner:
                scores = self._fit_scores(streams, y, train_idx[fit], train_idx[val], fusion,
                                          params, probability)
                correct += int((np.nanargmax(scores, 1) == y[train_idx[val]]).sum())
            table.append((params, correct / sum(len(v) for _, v in inner)))
        best = max(table, key=lambda t: t[1])[0]  # first of the best: smallest C
        return best, [{"params": p, "inner_accuracy": a} for p, a in table]

    def fit_predict(self, streams: list[list[np.ndarray]], y: np.ndarray, subjects: np.ndarray,
                    train_idx: np.ndarray, test_idx: np.ndarray, split: np.ndarray | None = None,
                    subject_independent: bool = True) -> tuple[np.ndarray, dict]:
        """Scores of the test videos (n_test x n_classes) and what was chosen."""
        streams = self.prepare(streams)
        inner = inner_splits(subjects[train_idx], y[train_idx], self.s.inner_folds,
                             self.s.seed, None if split is None else split[train_idx])
        if subject_independent:  # nothing of the test subjects takes part in selection
            tested = set(subjects[test_idx])
            for fit, val in inner:
                assert not tested & (set(subjects[train_idx[fit]]) | set(subjects[train_idx[val]]))
        if self.s.fusion != "scores":
            params, table = self._select(streams, y, train_idx, inner, self.s.fusion, False)
            scores = self._fit_scores(streams, y, train_idx, test_idx, self.s.fusion, params, False)
            return scores, {"params": params, "selection": table}
        chosen, per_stream = [], []
        for k, v in enumerate(streams):
            params, table = self._select([v], y, train_idx, inner, "concat", True)
            chosen.append({"params": params, "selection": table})
            per_stream.append(self._fit_scores([v], y, train_idx, test_idx, "concat", params, True))
        weights = self._weights(streams, y, train_idx, inner, [c["params"] for c in chosen])
        scores = sum(w * p for w, p in zip(weights, per_stream))
        return scores, {"streams": chosen, "weights": [float(w) for w in weights]}

    def _weights(self, streams, y, train_idx, inner, params) -> np.ndarray:
        n = len(streams)
        uniform = np.full(n, 1.0 / n)
        if self.s.weights == "mean" or not inner or n == 1:
            return uniform
        probs, truth = [], []
        for fit, val in inner:
            probs.append(np.stack([self._fit_scores([v], y, train_idx[fit], train_idx[val],
                                                    "concat", p, True)
                                   for v, p in zip(streams, params)]))
            truth.append(y[train_idx[val]])
        probs, truth = np.concatenate(probs, axis=1), np.concatenate(truth)
        candidates = simplex(n)
        # Log loss of the fused probabilities (a proper score: accuracy ties too often).
        loss = np.array([-np.log(np.clip(np.tensordot(w, probs, 1)[np.arange(len(truth)), truth],
                                         1e-12, None)).mean() for w in candidates])
        best = np.flatnonzero(loss <= loss.min() + 1e-12)
        # Among equally good weights, the one closest to the plain mean.
        return candidates[best[np.argmin(np.abs(candidates[best] - uniform).sum(1))]]


def metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy, unweighted average recall and macro F1 over the classes present in y_true."""
    present = np.unique(y_true)
    return {"accuracy": float(np.mean(y_true == y_pred)),
            "uar": float(recall_score(y_true, y_pred, labels=present, average="macro",
                                      zero_division=0)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro",
                                       zero_division=0))}


def summarise(per_fold: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and (population) standard deviation over folds of each metric."""
    keys = per_fold[0].keys()
    return {k: {"mean": float(np.mean([m[k] for m in per_fold])),
                "std": float(np.std([m[k] for m in per_fold]))} for k in keys}


def row_normalised_confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix in percent of each true class (rows sum to 100, or 0 if empty)."""
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(n_classes)).astype(np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    return np.divide(100.0 * cm, rows, out=np.zeros_like(cm), where=rows > 0)


def load_features(path: str, video_ids: list[str]) -> list[np.ndarray]:
    """Each video's segment features (S x D) from one features file."""
    with FeaturesFile(path) as f:
        return [f.features(v) for v in video_ids]


def load_scores(path: str, video_ids: list[str]) -> np.ndarray:
    """Each video's mean segment class probabilities (N x K) from a network's features file."""
    with FeaturesFile(path) as f:
        return np.stack([f.scores(v).mean(axis=0) for v in video_ids])


def check_subject_independent(folds: pd.DataFrame) -> None:
    """Raise if a subject of some fold's test set is also among that fold's training videos."""
    for fold in sorted(f for f in folds["fold"].unique() if f >= 0):
        test = folds["fold"] == fold
        both = sorted(set(folds.loc[test, "subject"]) & set(folds.loc[~test, "subject"]))
        if both:
            raise ValueError(f"folds are not subject-independent: subject {both[0]!r} is in the "
                             f"test set of fold {fold} and in its training set")


def _fold_metrics(fold, y, subjects, test_idx, scores) -> dict:
    m = metrics(y[test_idx], np.nanargmax(scores, 1))
    m.update({"fold": int(fold), "test_videos": int(len(test_idx)),
              "test_subjects": sorted(set(subjects[test_idx]))})
    log.info("fold %d: accuracy %.3f on %d videos", fold, m["accuracy"], len(test_idx))
    return m


def _rows(fold, ids, y, subjects, test_idx, scores, classes) -> list[dict]:
    pred = np.nanargmax(scores, 1)
    rows = []
    for k, i in enumerate(test_idx):
        row = {"video_id": ids[i], "subject": subjects[i], "fold": int(fold),
               "true": classes[y[i]], "predicted": classes[pred[k]]}
        row.update({f"score_{c}": float(scores[k, j]) for j, c in enumerate(classes)})
        rows.append(row)
    return rows


def run(folds: pd.DataFrame, feature_files: dict[str, dict[int, str]], classes: list[str],
        settings: Settings, subject_independent: bool = True) -> tuple[dict, pd.DataFrame]:
    """Evaluate one experiment over all test folds.

    ``feature_files[stream][fold]`` is the features file that fold uses (its fine-tuned model,
    or the one extraction of a stream that is not fine-tuned). Videos without features in
    every file (failed upstream) are left out and listed. The folds must be subject-independent;
    ``subject_independent=False`` lifts that check, for leakage audits only.
    """
    if subject_independent and "split" not in folds:
        check_subject_independent(folds)
    class_index = {c: i for i, c in enumerate(classes)}
    present = None
    for per_stream in feature_files.values():
        for path in set(per_stream.values()):
            with FeaturesFile(path) as f:
                present = set(f.videos()) if present is None else present & set(f.videos())
    excluded = sorted(set(folds["video_id"]) - present)
    folds = folds[folds["video_id"].isin(present)].reset_index(drop=True)
    ids = folds["video_id"].tolist()
    y = folds["label"].map(class_index).to_numpy()
    subjects = folds["subject"].astype(str).to_numpy()
    split = folds["split"].astype(str).to_numpy() if "split" in folds else None
    experiment = Experiment(settings, len(classes))
    per_fold, rows, choices = [], [], []
    shared = {}  # features files used by every fold (streams that are not fine-tuned)
    for fold in sorted(f for f in folds["fold"].unique() if f >= 0):
        test_idx = np.flatnonzero(folds["fold"] == fold)
        train_idx = np.flatnonzero(folds["fold"] != fold)
        if settings.kind == "softmax":
            test_ids = [ids[i] for i in test_idx]
            scores = np.mean([load_scores(feature_files[s][fold], test_ids)
                              for s in feature_files], axis=0)
            per_fold.append(_fold_metrics(fold, y, subjects, test_idx, scores))
            choices.append({"fold": int(fold), "softmax": list(feature_files)})
            rows += _rows(fold, ids, y, subjects, test_idx, scores, classes)
            continue
        streams = []
        for s in feature_files:
            path = feature_files[s][fold]
            if len(set(feature_files[s].values())) == 1:
                if path not in shared:
                    shared[path] = experiment.prepare([load_features(path, ids)])[0]
                streams.append(shared[path])
            else:
                streams.append(experiment.prepare([load_features(path, ids)])[0])
        if len(set(y[train_idx])) < 2:
            raise ValueError(f"fold {fold}: its training videos hold a single class "
                             f"({classes[y[train_idx][0]]}); a classifier needs two")
        scores, chosen = experiment.fit_predict(streams, y, subjects, train_idx, test_idx, split,
                                                subject_independent)
        per_fold.append(_fold_metrics(fold, y, subjects, test_idx, scores))
        choices.append({"fold": int(fold), **chosen})
        rows += _rows(fold, ids, y, subjects, test_idx, scores, classes)
    predictions = pd.DataFrame(rows)
    y_true = predictions["true"].map(class_index).to_numpy()
    y_pred = predictions["predicted"].map(class_index).to_numpy()
    result = {
        "classes": list(classes),
        "streams": list(feature_files),
        "settings": asdict(settings),
        "folds": per_fold,
        "mean": summarise([{k: m[k] for k in ("accuracy", "uar", "macro_f1")} for m in per_fold]),
        "pooled": metrics(y_true, y_pred),
        "confusion_percent": row_normalised_confusion(y_true, y_pred, len(classes)).round(4).tolist(),
        "chosen": choices,
        "excluded_videos": excluded,
    }
    return result, predictions
