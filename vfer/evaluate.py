"""SVM evaluation on fused video features over subject-independent folds, with metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, recall_score
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from vfer.fusion import fuse
from vfer.io import open_h5


def video_features(path: str, video_ids: list[str]) -> np.ndarray:
    """Mean of each video's segment features from one features file (videos x D)."""
    with open_h5(path, "features") as f:
        missing = [v for v in video_ids if v not in f]
        if missing:
            raise KeyError(f"{path}: no features for {len(missing)} videos, e.g. {missing[:3]}")
        return np.stack([f[v]["features"][()].mean(axis=0) for v in video_ids])


def classify(train_blocks: list[np.ndarray], y_train: np.ndarray, test_blocks: list[np.ndarray],
             n_classes: int, fusion: str = "concat", kernel: str = "linear", C: float = 1.0,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standardise each stream on the training videos, fuse, fit an SVM, score the test videos.

    Returns predicted labels and class scores (test x n_classes; NaN for classes absent from
    the training fold).
    """
    tr, te = [], []
    for a, b in zip(train_blocks, test_blocks):
        scaler = StandardScaler().fit(a)
        tr.append(scaler.transform(a))
        te.append(scaler.transform(b))
    x_train, x_test = fuse(tr, fusion), fuse(te, fusion)
    svm = SVC(kernel=kernel, C=C, decision_function_shape="ovr", random_state=seed)
    svm.fit(x_train, y_train)
    scores = np.full((len(x_test), n_classes), np.nan)
    decision = svm.decision_function(x_test)
    if decision.ndim == 1:  # two classes in training: sklearn returns one column
        decision = np.stack([-decision, decision], axis=1)
    scores[:, svm.classes_] = decision
    return svm.predict(x_test), scores


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


def run(folds: pd.DataFrame, feature_files: dict[str, dict[int, str]], classes: list[str],
        fusion: str = "concat", kernel: str = "linear", C: float = 1.0,
        seed: int = 0) -> tuple[dict, pd.DataFrame]:
    """Evaluate one experiment over all folds.

    ``feature_files[stream][fold]`` is the features file extracted with fold ``fold``'s model.
    Returns the metrics dict and the predictions table.
    """
    class_index = {c: i for i, c in enumerate(classes)}
    present = None
    for per_stream in feature_files.values():
        for path in per_stream.values():
            with open_h5(path, "features") as f:
                present = set(f) if present is None else present & set(f)
    excluded = sorted(set(folds["video_id"]) - present)
    folds = folds[folds["video_id"].isin(present)].reset_index(drop=True)
    y = folds["label"].map(class_index).to_numpy()
    per_fold, rows = [], []
    for fold in sorted(folds["fold"].unique()):
        test = (folds["fold"] == fold).to_numpy()
        ids = folds["video_id"].tolist()
        blocks = [video_features(feature_files[s][fold], ids) for s in feature_files]
        pred, scores = classify([b[~test] for b in blocks], y[~test], [b[test] for b in blocks],
                                len(classes), fusion, kernel, C, seed)
        m = metrics(y[test], pred)
        m["fold"] = int(fold)
        m["test_videos"] = int(test.sum())
        per_fold.append(m)
        sub = folds[test]
        for i, (vid, subj) in enumerate(zip(sub["video_id"], sub["subject"])):
            row = {"video_id": vid, "subject": subj, "fold": int(fold), "true": classes[y[test][i]],
                   "predicted": classes[pred[i]]}
            row.update({f"score_{c}": float(scores[i, j]) for j, c in enumerate(classes)})
            rows.append(row)
    predictions = pd.DataFrame(rows)
    y_true = predictions["true"].map(class_index).to_numpy()
    y_pred = predictions["predicted"].map(class_index).to_numpy()
    result = {
        "classes": list(classes),
        "streams": list(feature_files),
        "fusion": fusion,
        "folds": per_fold,
        "mean": summarise([{k: m[k] for k in ("accuracy", "uar", "macro_f1")} for m in per_fold]),
        "pooled": metrics(y_true, y_pred),
        "confusion_percent": row_normalised_confusion(y_true, y_pred, len(classes)).round(4).tolist(),
        "excluded_videos": excluded,
    }
    return result, predictions
