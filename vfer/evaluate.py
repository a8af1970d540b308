"""Subject-independent evaluation of an experiment: fusion, classifiers, nested model selection.

For every outer fold, everything is fitted on the fold's training videos only: the per-stream
standardisation, the projection to a common dimension (PCA, for sum and product fusion of
streams of different dimension), the classifier and its hyper-parameters (C, gamma: chosen by
inner cross-validation over groups of *training* subjects, or on the ``val`` rows of a
predefined split), the streams kept (``select``), the score calibration, the score-fusion
weights and the stacking meta-classifier (the same inner folds). docs/methods.md gives the
formulas.

* Each stream's sample features may be normalised first (``normalise``: ``l2`` per sample,
  or ``tanh``), then standardised on the training videos (``standardise``).
* Feature fusion (``concat``, ``sum``, ``product``), one classifier. ``concat`` with
  ``balance`` scales each stream's block so that every stream holds an equal share of the
  variance, whatever its dimension. ``select`` chooses the streams (every non-empty subset)
  and the classifier's parameters together by inner cross-validation.
* Score fusion (``scores``): one classifier per stream; its out-of-fold decision scores on the
  inner folds fit one temperature that maps them to class probabilities (subject-grouped
  calibration); then the stream is refitted on all training videos. The calibrated
  probabilities are averaged (``weights: mean``) or weighted with the weights on a simplex
  grid whose fused prediction is right most often on cross-fitted probabilities, the closest
  to the plain mean among ties (``learned``); ``stacking`` fits a multinomial logistic
  regression on the streams' log-probabilities, shrunk towards the plain mean, instead.
* Segments to videos (``aggregate``): ``mean_features`` averages a video's segment features
  before classification; ``mean_scores`` classifies segments (each with its video's label)
  and averages their scores per video.
* A network's own softmax (``kind: softmax``): nothing is fitted here; each video's score is
  the mean of its segments' class probabilities from the fold's network (several networks:
  the mean of their scores).
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, f1_score, recall_score
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from vfer.folds import fold_rows
from vfer.fusion import balance_weights, fuse, normalise_rows
from vfer.store import FeaturesFile

log = logging.getLogger(__name__)

#: C of the stacking meta-classifier, chosen by the accuracy of cross-fitted probabilities
#: (ties: the first, nearest the plain mean).
STACK_C = (0.001, 0.01, 0.1, 1.0, 10.0)


@dataclass(frozen=True)
class Settings:
    """How an experiment is evaluated (classifier, selection grid, fusion, aggregation)."""

    fusion: str = "concat"
    weights: str = "mean"  # score fusion: mean, learned or stacking
    standardise: bool = True
    normalise: tuple = ()  # per stream: none, l2 or tanh (empty: none for every stream)
    balance: bool = True  # concat: equal variance share per stream
    select: bool = False  # feature fusion: choose the streams by inner cross-validation
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
                   standardise=experiment["standardise"],
                   normalise=tuple(experiment["normalise"]), balance=experiment["balance"],
                   select=experiment["select"], aggregate=aggregate, kind=classifier["kind"],
                   kernel=classifier["kernel"], C=tuple(classifier["C"]),
                   gamma=tuple(classifier["gamma"]), class_weight=classifier["class_weight"],
                   inner_folds=classifier["inner_folds"], seed=seed)

    def grid(self) -> list[dict]:
        gammas = self.gamma if self.kind == "svc" and self.kernel == "rbf" else ("scale",)
        return [{"C": float(c), "gamma": g} for c in sorted(self.C) for g in gammas]

    def normalisation(self, stream: int) -> str:
        return self.normalise[stream] if self.normalise else "none"


def make_classifier(s: Settings, C: float, gamma):
    """The configured classifier (scores are its decision function)."""
    if s.kind == "logistic":
        return LogisticRegression(C=C, class_weight=s.class_weight, max_iter=5000)
    if s.kind == "linear_svc":
        return LinearSVC(C=C, class_weight=s.class_weight, random_state=s.seed, max_iter=20000)
    if s.kind == "svc":
        return SVC(kernel=s.kernel, C=C, gamma=gamma, class_weight=s.class_weight,
                   decision_function_shape="ovr", random_state=s.seed)
    raise ValueError(f"unknown classifier {s.kind!r}")


def class_scores(clf, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Decision scores for every class (NaN for classes the classifier never saw)."""
    out = np.full((len(x), n_classes), np.nan)
    d = clf.decision_function(x)
    if d.ndim == 1:  # two classes: one column
        d = np.stack([-d, d], axis=1)
    out[:, clf.classes_] = d
    return out


class FeatureModel:
    """Standardise each stream, project to a common dimension if needed, balance, fuse,
    classify."""

    def __init__(self, s: Settings, fusion: str, C: float, gamma):
        self.s, self.fusion, self.C, self.gamma = s, fusion, C, gamma

    def _blocks(self, blocks: list[np.ndarray]) -> list[np.ndarray]:
        z = [sc.transform(b) for sc, b in zip(self.scalers, blocks)] if self.scalers \
            else [np.asarray(b, np.float64) for b in blocks]
        if self.pcas is not None:
            z = [p.transform(b) for p, b in zip(self.pcas, z)]
        return [w * b for w, b in zip(self.weights, z)]

    def fit(self, blocks: list[np.ndarray], y: np.ndarray, n_classes: int) -> FeatureModel:
        self.n_classes = n_classes
        self.scalers = [StandardScaler().fit(b) for b in blocks] if self.s.standardise else None
        self.pcas, self.weights = None, np.ones(len(blocks))
        z = self._blocks(blocks)
        dims = {b.shape[1] for b in z}
        if self.fusion in ("sum", "product") and len(dims) > 1:
            if not self.s.standardise:
                raise ValueError(f"{self.fusion} fusion of raw features (standardise: false) "
                                 f"needs streams of equal dimension, got {sorted(dims)}")
            d = min(min(dims), len(y) - 1)
            self.pcas = [PCA(n_components=d, random_state=self.s.seed).fit(b) for b in z]
            z = [p.transform(b) for p, b in zip(self.pcas, z)]
        if self.fusion == "concat" and self.s.balance:
            self.weights = balance_weights(z)
            z = [w * b for w, b in zip(self.weights, z)]
        self.clf = make_classifier(self.s, self.C, self.gamma)
        self.clf.fit(fuse(z, self.fusion), y)
        return self

    def scores(self, blocks: list[np.ndarray]) -> np.ndarray:
        return class_scores(self.clf, fuse(self._blocks(blocks), self.fusion), self.n_classes)


def filled(scores: np.ndarray) -> np.ndarray:
    """Decision scores with the NaN of unseen classes replaced by the lowest score minus 1."""
    finite = scores[np.isfinite(scores)]
    low = (finite.min() if finite.size else 0.0) - 1.0
    return np.where(np.isfinite(scores), scores, low)


class Temperature:
    """A stream's calibration: P(c | s) = softmax_c(s_c / T) of its decision scores s (N x K).
    The one temperature T minimises the cross-entropy to Platt's smoothed targets (1 - e on
    the true class, e / (K - 1) on the others, e = 1 / (N + 2)), so that a stream that makes
    no mistake on the N calibration videos is not made certain. One parameter: it fits on the
    few videos of an inner validation set, and never changes which class a stream predicts."""

    def __init__(self, n_classes: int):
        self.n_classes = n_classes

    def fit(self, x: np.ndarray, y: np.ndarray) -> Temperature:
        from scipy.optimize import minimize_scalar

        e = 1.0 / (len(y) + 2)
        target = np.full(x.shape, e / (x.shape[1] - 1))
        target[np.arange(len(y)), y] = 1.0 - e
        self.temperature = float(np.exp(minimize_scalar(
            lambda log_t: -(target * np.log(np.clip(self._proba(x, np.exp(log_t)), 1e-300, None))
                            ).sum(1).mean(), bounds=(-8.0, 8.0), method="bounded").x))
        return self

    def _proba(self, x: np.ndarray, temperature: float) -> np.ndarray:
        from scipy.special import softmax

        return softmax(x / temperature, axis=1)

    def proba(self, x: np.ndarray) -> np.ndarray:
        return self._proba(x, self.temperature)


class Stacker:
    """The stacking meta-classifier: a multinomial logistic regression on log-probabilities
    z (N x (1 + S) x K), the log of the streams' mean calibrated probability first, then each
    stream's, with one weight per input shared by every class and a bias per class:
    P(c) ~ exp(sum_j w_j z_jc + b_c). The penalty (|w - (1, 0, ..., 0)|^2 + |b|^2) / (2 C N)
    shrinks it towards the plain mean of the streams, which it leaves only as far as the
    out-of-fold scores show that another combination predicts better."""

    def __init__(self, C: float, n_classes: int):
        self.C, self.n_classes = C, n_classes

    def _logits(self, theta: np.ndarray, z: np.ndarray) -> np.ndarray:
        m = z.shape[1]
        return np.einsum("nmk,m->nk", z, theta[:m]) + theta[m:]

    def fit(self, z: np.ndarray, y: np.ndarray) -> Stacker:
        from scipy.optimize import minimize
        from scipy.special import log_softmax

        n, m, k = z.shape
        onehot = np.eye(k)[y]
        prior = np.zeros(m + k)
        prior[0] = 1.0

        def loss(theta):
            log_p = log_softmax(self._logits(theta, z), axis=1)
            residual = (np.exp(log_p) - onehot) / n
            grad = np.concatenate([np.einsum("nk,nmk->m", residual, z), residual.sum(0)])
            shrink = theta - prior
            return (-(onehot * log_p).sum() / n + shrink @ shrink / (2 * self.C * n),
                    grad + shrink / (self.C * n))

        self.theta = minimize(loss, prior, jac=True, method="L-BFGS-B").x
        return self

    def proba(self, z: np.ndarray) -> np.ndarray:
        from scipy.special import softmax

        return softmax(self._logits(self.theta, z), axis=1)

    @property
    def weights(self) -> list[float]:
        """The weights of the mean, then of each stream."""
        return self.theta[:-self.n_classes].tolist()


def stacking_inputs(probs: np.ndarray) -> np.ndarray:
    """Stacker inputs from calibrated probabilities (N x S x K): the log of their mean over
    the streams, then each stream's log-probabilities."""
    return log_probabilities(np.concatenate([probs.mean(1, keepdims=True), probs], axis=1))


def log_probabilities(p: np.ndarray) -> np.ndarray:
    """log p, floored at log 1e-4 (a class a calibration never predicts is not -inf)."""
    return np.log(np.clip(p, 1e-4, None))


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())


def cross_fitted(make, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray | None:
    """Probabilities of every row from a model ``make()`` fitted on the other groups' rows;
    None when some group cannot be predicted (a single group, or the others hold one class)."""
    out = None
    for g in np.unique(groups):
        held = groups == g
        if held.all() or len(set(y[~held])) < 2:
            return None
        p = make().fit(x[~held], y[~held]).proba(x[held])
        out = np.zeros((len(y), p.shape[1])) if out is None else out
        out[held] = p
    return out


def fit_score_model(make, x: np.ndarray, y: np.ndarray, groups: np.ndarray,
                    grid: tuple = (None,)) -> tuple:
    """A calibration or stacking model ``make(C)`` on out-of-fold scores ``x`` (rows grouped
    by inner fold), C chosen from ``grid`` by the accuracy of cross-fitted probabilities (each
    group's rows predicted by a model fitted on the other groups'; ties: the first, i.e. the
    strongest shrinkage). Returns the model fitted on every row, the cross-fitted
    probabilities with the chosen C (in-sample ones when the rows form one group) and what
    was chosen."""
    table = []
    for C in grid:
        p = cross_fitted(lambda: make(C), x, y, groups)
        if p is None:
            table = []
            break
        table.append((C, float(np.mean(p.argmax(1) == y)), log_loss(p, y), p))
    if table:
        C, _, _, p = max(table, key=lambda t: t[1])  # first of the best
    else:
        C, p = grid[len(grid) // 2], None
    fitted = make(C).fit(x, y)
    info = {}
    if len(grid) > 1:
        info = {"C": C, "selection": [{"C": c, "accuracy": a, "log_loss": v}
                                      for c, a, v, _ in table]}
    return fitted, fitted.proba(x) if p is None else p, info


def inner_splits(subjects: np.ndarray, labels: np.ndarray, n_splits: int, seed: int,
                 split: np.ndarray | None = None,
                 honest: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner (fit, validation) index pairs over the *training* videos given: subject-grouped
    folds, or the predefined train/val rows when ``split`` has val rows. ``honest`` (a mask)
    marks the videos no stream's network was trained on: only they are validated on (their
    subjects form the groups; the fit part is every other subject's videos). A pair whose fit
    part holds a single class cannot train a classifier and is left out (a subject with one
    video can make such a pair). Empty when the training videos cannot be split (a single
    subject, or no honest video)."""
    honest = np.ones(len(subjects), bool) if honest is None else np.asarray(honest, bool)
    if split is not None and (split == "val").any():
        pairs = [(np.flatnonzero(split != "val"), np.flatnonzero((split == "val") & honest))]
    else:
        pool = sorted(set(subjects[honest]))
        k = min(n_splits, len(pool))
        if k < (2 if honest.all() else 1):
            return []
        order = np.random.default_rng(seed).permutation(len(pool))
        group = {pool[j]: i % k for i, j in enumerate(order)}
        g = np.array([group.get(s, -1) for s in subjects])
        pairs = [(np.flatnonzero(g != i), np.flatnonzero(g == i)) for i in range(k)]
    return [(fit, val) for fit, val in pairs if len(val) and len(set(labels[fit])) > 1]


def simplex(n: int, step: float = 0.1) -> np.ndarray:
    """All weight vectors of length n on the grid of ``step`` with w >= 0 and sum 1."""
    m = int(round(1 / step))
    points = [c for c in itertools.product(range(m + 1), repeat=n) if sum(c) == m]
    return np.array(points, np.float64) / m


def learned_weights(probs: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Weights on the simplex (step 0.1) for the weighted mean of the streams' probabilities
    ``probs`` (N x S x K): of those whose fused prediction is right most often, the closest to
    the plain mean. (Log loss would reward the sharpest stream that happens to make no
    mistake on a few validation videos, and drop the others.)"""
    s = probs.shape[1]
    uniform = np.full(s, 1.0 / s)
    candidates = simplex(s)
    accuracy = np.array([np.mean(np.einsum("nsk,s->nk", probs, w).argmax(1) == truth)
                         for w in candidates])
    best = np.flatnonzero(accuracy >= accuracy.max() - 1e-12)
    return candidates[best[np.argmin(np.abs(candidates[best] - uniform).sum(1))]]


def stream_subsets(n: int, select: bool) -> list[tuple[int, ...]]:
    """The stream subsets that feature fusion chooses between: all of them, or every non-empty
    subset (largest first, so that ties keep more streams)."""
    if not select or n == 1:
        return [tuple(range(n))]
    return [c for k in range(n, 0, -1) for c in itertools.combinations(range(n), k)]


class Experiment:
    """Fits and applies one experiment's model on a fold's training videos."""

    def __init__(self, s: Settings, n_classes: int):
        self.s, self.n_classes = s, n_classes

    # -- samples ----------------------------------------------------------------------------
    def prepare(self, streams: list[list[np.ndarray]], first: int = 0) -> list:
        """Per stream what the samples are drawn from, normalised (``normalise``): with
        ``mean_features`` each video's mean segment feature (N x D, computed once), else the
        videos' segment features. ``first`` is the index of streams[0] in the experiment."""
        out = []
        for k, v in enumerate(streams):
            method = self.s.normalisation(first + k)
            if self.s.aggregate == "mean_features":
                out.append(normalise_rows(np.stack([x.mean(0) for x in v]), method))
            else:
                out.append([normalise_rows(x, method) for x in v])
        return out

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

    def fit_model(self, streams: list, y: np.ndarray, fit_idx: np.ndarray, fusion: str,
                  params: dict) -> FeatureModel:
        """A FeatureModel fitted on the videos ``fit_idx`` (their samples: ``aggregate``)."""
        xs, owner = self._samples(streams, fit_idx)
        model = FeatureModel(self.s, fusion, params["C"], params["gamma"])
        return model.fit(xs, y[fit_idx][owner], self.n_classes)

    def _fit_scores(self, streams, y, fit_idx, score_idx, fusion, params) -> np.ndarray:
        """Video decision scores for ``score_idx`` from a model fitted on ``fit_idx``."""
        model = self.fit_model(streams, y, fit_idx, fusion, params)
        xt, owner_t = self._samples(streams, score_idx)
        return self._video_scores(model.scores(xt), owner_t, len(score_idx))

    # -- model selection ------------------------------------------------------------------------
    def _select(self, streams, y, train_idx, inner, fusion,
                need_scores: bool = False) -> tuple[dict, list, np.ndarray | None]:
        """The grid point of best inner accuracy (first of the best: smallest C), the table,
        and its out-of-fold decision scores (rows: the inner validation parts in order), or
        None when nothing is to be chosen (no inner folds; one grid point and
        ``need_scores`` false)."""
        grid = self.s.grid()
        if not inner or (len(grid) == 1 and not need_scores):
            return grid[0], [], None
        truth = np.concatenate([y[train_idx[val]] for _, val in inner])
        table = []
        for params in grid:
            oof = np.concatenate([self._fit_scores(streams, y, train_idx[fit], train_idx[val],
                                                   fusion, params) for fit, val in inner])
            table.append((params, float(np.mean(np.nanargmax(oof, 1) == truth)), oof))
        params, _, oof = max(table, key=lambda t: t[1])
        return params, [{"params": p, "inner_accuracy": a} for p, a, _ in table], oof

    def fit_predict(self, streams: list[list[np.ndarray]], y: np.ndarray, subjects: np.ndarray,
                    train_idx: np.ndarray, test_idx: np.ndarray, split: np.ndarray | None = None,
                    subject_independent: bool = True,
                    honest: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
        """Scores of the test videos (n_test x n_classes) and what was chosen. ``streams``
        come from ``prepare``; ``honest`` marks the training videos (of train_idx) that no
        stream's network was trained on, the only ones validated on (None: all of them)."""
        inner = inner_splits(subjects[train_idx], y[train_idx], self.s.inner_folds,
                             self.s.seed, None if split is None else split[train_idx], honest)
        if subject_independent:  # nothing of the test subjects takes part in selection
            tested = set(subjects[test_idx])
            for fit, val in inner:
                both = tested & (set(subjects[train_idx[fit]]) | set(subjects[train_idx[val]]))
                if both:
                    raise ValueError(f"test subject {sorted(both)[0]!r} would take part in "
                                     "model selection")
        if self.s.fusion == "scores":
            return self._score_fusion(streams, y, train_idx, test_idx, inner)
        return self._feature_fusion(streams, y, train_idx, test_idx, inner)

    def _feature_fusion(self, streams, y, train_idx, test_idx, inner) -> tuple[np.ndarray, dict]:
        best, tried = None, []
        subsets = stream_subsets(len(streams), self.s.select)
        if not inner and (len(subsets) > 1 or len(self.s.grid()) > 1):
            log.warning("no inner folds of the training subjects (one subject, or every inner "
                        "fold would train on a single class): nothing is selected, the first "
                        "grid point (%s) and all streams are used", self.s.grid()[0])
        for subset in subsets:
            chosen = [streams[k] for k in subset]
            params, table, _ = self._select(chosen, y, train_idx, inner, self.s.fusion,
                                            need_scores=len(subsets) > 1)
            accuracy = max((t["inner_accuracy"] for t in table), default=0.0)
            tried.append({"selected": list(subset), "inner_accuracy": accuracy})
            if best is None or accuracy > best[0]:  # ties keep the earlier, larger subset
                best = (accuracy, subset, params, table)
        _, subset, params, table = best
        scores = self._fit_scores([streams[k] for k in subset], y, train_idx, test_idx,
                                  self.s.fusion, params)
        chosen = {"params": params, "selection": table, "selected": list(subset),
                  "inner_folds": len(inner)}
        if len(subsets) > 1:
            chosen["subsets"] = tried
        return scores, chosen

    def _score_fusion(self, streams, y, train_idx, test_idx, inner) -> tuple[np.ndarray, dict]:
        if not inner:
            raise ValueError("score fusion calibrates each stream on inner folds of the "
                             "training subjects, and these training videos give none (one "
                             "subject, or every inner fold would train on a single class)")
        rows = np.concatenate([train_idx[val] for _, val in inner])
        groups = np.concatenate([np.full(len(val), i) for i, (_, val) in enumerate(inner)])
        truth = y[rows]
        chosen, oof, test, calibrated, test_probs = [], [], [], [], []
        for v in streams:
            params, table, d = self._select([v], y, train_idx, inner, "concat", True)
            oof.append(filled(d))
            test.append(filled(self._fit_scores([v], y, train_idx, test_idx, "concat", params)))
            calibration, p, info = fit_score_model(lambda _: Temperature(self.n_classes),
                                                   oof[-1], truth, groups)
            calibrated.append(p)
            test_probs.append(calibration.proba(test[-1]))
            chosen.append({"params": params, "selection": table,
                           "calibration": {**info, "temperature": calibration.temperature}})
        probs, test_probs = np.stack(calibrated, 1), np.stack(test_probs, 1)
        if self.s.weights == "stacking":
            meta, _, info = fit_score_model(lambda C: Stacker(C, self.n_classes),
                                            stacking_inputs(probs), truth, groups, STACK_C)
            scores = meta.proba(stacking_inputs(test_probs))
            return scores, {"streams": chosen, "stacking": {**info, "weights": meta.weights}}
        if self.s.weights == "learned" and len(streams) > 1:
            weights = learned_weights(probs, truth)
        else:
            weights = np.full(len(streams), 1.0 / len(streams))
        return np.einsum("nsk,s->nk", test_probs, weights), {
            "streams": chosen, "weights": [float(w) for w in weights]}


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


def fitted_videos(path: str) -> set[str]:
    """The videos whose features in ``path`` come from a network trained on them: a stream
    fine-tuned per fold lists them in its model record (attr ``model_info``; its validation
    videos are not among them); a stream extracted once has none. A relative record path is
    looked up from the working folder, then from the folders that hold the features file."""
    from pathlib import Path

    with FeaturesFile(path) as f:
        record = f.attrs.get("model_info")
    if not record:
        return set()
    candidates = [Path(record)] + [d / record for d in Path(path).resolve().parents]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ValueError(f"{path}: its model record {record} is missing (it lists the videos "
                         "the network was trained on, which inner validation must leave out)")
    return set(json.loads(found.read_text())["train_videos"])


def load_scores(path: str, video_ids: list[str]) -> np.ndarray:
    """Each video's mean segment class probabilities (N x K) from a network's features file."""
    with FeaturesFile(path) as f:
        return np.stack([f.scores(v).mean(axis=0) for v in video_ids])


def check_segment_counts(streams: list[list[np.ndarray]], ids: list[str],
                         names: list[str]) -> None:
    """Raise unless every stream has as many segments of each video as the first: fused
    segment by segment, the streams' rows must be the same segments."""
    for k, v in enumerate(streams[1:], 1):
        for vid, a, b in zip(ids, streams[0], v):
            if len(a) != len(b):
                raise ValueError(f"{vid}: {len(a)} segments in stream {names[0]}, {len(b)} in "
                                 f"{names[k]}; segment-level aggregation needs the same "
                                 "segments in every stream")


def check_subject_independent(folds: pd.DataFrame) -> None:
    """Raise if a subject of some fold's test set is also among that fold's training videos."""
    for fold in sorted(f for f in folds["fold"].unique() if f >= 0):
        train, test = fold_rows(folds, fold)
        both = sorted(set(test["subject"]) & set(train["subject"]))
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


def _video_table(folds: pd.DataFrame, present: set) -> pd.DataFrame:
    """One row per video of the folds table (a repeated protocol lists each video once per
    repetition) that has features in every file."""
    videos = folds.drop_duplicates("video_id")
    columns = [c for c in ("video_id", "subject", "label", "split") if c in videos]
    return videos.loc[videos["video_id"].isin(present), columns].reset_index(drop=True)


def run(folds: pd.DataFrame, feature_files: dict[str, dict[int, str]], classes: list[str],
        settings: Settings, subject_independent: bool = True) -> tuple[dict, pd.DataFrame]:
    """Evaluate one experiment over all test folds (every repetition's, for a repeated
    protocol: the metrics are summarised over all of them).

    ``feature_files[stream][fold]`` is the features file that fold uses (its fine-tuned model,
    or the one extraction of a stream that is not fine-tuned). Videos without features in
    every file (failed upstream) are left out and listed. The folds must be subject-independent;
    ``subject_independent=False`` lifts that check, for leakage audits only.
    """
    if subject_independent:
        check_subject_independent(folds)
    if settings.fusion == "scores" and settings.kind == "svc" and len(classes) > 2:
        log.warning("score fusion calibrates each stream's class scores, and an SVC of more "
                    "than two classes scores by one-vs-one votes: little of a stream's "
                    "confidence reaches the fusion; linear_svc or logistic score each class "
                    "continuously (docs/methods.md, score fusion)")
    class_index = {c: i for i, c in enumerate(classes)}
    present = None
    for per_stream in feature_files.values():
        for path in set(per_stream.values()):
            with FeaturesFile(path) as f:
                present = set(f.videos()) if present is None else present & set(f.videos())
    excluded = sorted(set(folds["video_id"]) - present)
    videos = _video_table(folds, present)
    planned = set(folds["fold"]) - {-1}
    folds = folds[folds["video_id"].isin(present)]
    empty = sorted(planned - set(folds["fold"]))
    if empty:
        log.warning("folds %s are left out: none of their test videos has features in every "
                    "file (they failed upstream; see excluded_videos)", empty)
    if not set(folds["fold"]) - {-1}:
        raise ValueError(f"no test video has features in every features file ({len(excluded)} "
                         f"videos left out, e.g. {excluded[:5]}): "
                         f"{sorted({p for s in feature_files.values() for p in s.values()})}")
    ids = videos["video_id"].tolist()
    position = {v: i for i, v in enumerate(ids)}
    y = videos["label"].map(class_index).to_numpy()
    subjects = videos["subject"].astype(str).to_numpy()
    split = videos["split"].astype(str).to_numpy() if "split" in videos else None
    experiment = Experiment(settings, len(classes))
    per_fold, rows, choices = [], [], []
    shared = {}  # features files used by every fold (streams that are not fine-tuned)
    for fold in sorted(f for f in folds["fold"].unique() if f >= 0):
        train_rows, test_rows = fold_rows(folds, fold)
        train_idx = train_rows["video_id"].map(position).to_numpy()
        test_idx = test_rows["video_id"].map(position).to_numpy()
        if settings.kind == "softmax":
            test_ids = [ids[i] for i in test_idx]
            scores = np.mean([load_scores(feature_files[s][fold], test_ids)
                              for s in feature_files], axis=0)
            per_fold.append(_fold_metrics(fold, y, subjects, test_idx, scores))
            choices.append({"fold": int(fold), "softmax": list(feature_files)})
            rows += _rows(fold, ids, y, subjects, test_idx, scores, classes)
            continue
        streams = []
        for k, s in enumerate(feature_files):
            path = feature_files[s][fold]
            if len(set(feature_files[s].values())) == 1:
                if path not in shared:
                    shared[path] = experiment.prepare([load_features(path, ids)], k)[0]
                streams.append(shared[path])
            else:
                streams.append(experiment.prepare([load_features(path, ids)], k)[0])
        if settings.aggregate != "mean_features":
            check_segment_counts(streams, ids, list(feature_files))
        if len(set(y[train_idx])) < 2:
            raise ValueError(f"fold {fold}: its training videos hold a single class "
                             f"({classes[y[train_idx][0]]}); a classifier needs two")
        fitted = set().union(*(fitted_videos(feature_files[s][fold]) for s in feature_files))
        honest = ~np.isin([ids[i] for i in train_idx], sorted(fitted))
        if fitted and not honest.any():
            log.warning("fold %d: every training video trained a network; inner validation "
                        "uses their own (optimistic) features", fold)
            honest = None
        try:
            scores, chosen = experiment.fit_predict(streams, y, subjects, train_idx, test_idx,
                                                    split, subject_independent, honest)
        except ValueError as exc:
            raise ValueError(f"fold {fold}: {exc}") from None
        names = list(feature_files)
        for entry in [chosen] + chosen.get("subsets", []):
            if "selected" in entry:
                entry["selected"] = [names[k] for k in entry["selected"]]
        per_fold.append(_fold_metrics(fold, y, subjects, test_idx, scores))
        chosen["validated_on"] = "all training videos" if honest is None or honest.all() \
            else f"{int(honest.sum())} videos no network was trained on"
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
        "folds_without_videos": [int(f) for f in empty],
    }
    return result, predictions
