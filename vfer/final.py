"""The final model of an experiment: its networks trained on every subject
(vfer.training.train_final), its classifier
fitted on every video with the choices its cross-validation made most often, written as a
bundle (vfer.bundle, docs/predict.md).

The classifier is the one vfer.evaluate fits (FeatureModel, Temperature, learned weights,
Stacker), on all videos instead of one fold's. Hyper-parameters the cross-validation chose per
fold (C, gamma, the streams kept by ``select``) take the value chosen in most folds (ties: the
first fold's); what is fitted (scaling, projection, SVM, calibration, fusion weights, stacking)
is refitted, calibrations and fusion weights on inner subject-grouped folds of the videos no
network was trained on, as in each outer fold. Feature fusion gets probabilities as score
fusion calibrates a stream: one temperature on the out-of-fold decision scores.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import pandas as pd

from vfer import __version__, bundle
from vfer.evaluate import (STACK_C, Experiment, Settings, Stacker, Temperature, filled,
                           fit_score_model, fitted_videos, inner_splits, learned_weights,
                           load_features, stacking_inputs)
from vfer.store import FacesFile, FeaturesFile

log = logging.getLogger(__name__)


def most_frequent(values: list):
    """The value given most often (ties: the one given first); values compared as JSON."""
    keys = [json.dumps(v, sort_keys=True) for v in values]
    count = Counter(keys)
    best = max(count.values())
    return values[next(i for i, k in enumerate(keys) if count[k] == best)], best


def _export_model(m, key: str) -> tuple[dict, dict]:
    """A fitted vfer.evaluate.FeatureModel as parameters and arrays (vfer.bundle.FeatureModel)."""
    arrays = {}
    for i, sc in enumerate(m.scalers or []):
        arrays[f"{key}/scaler{i}/mean"], arrays[f"{key}/scaler{i}/scale"] = sc.mean_, sc.scale_
    for i, p in enumerate(m.pcas or []):
        arrays[f"{key}/pca{i}/mean"], arrays[f"{key}/pca{i}/components"] = p.mean_, p.components_
    clf = m.clf
    spec = {"classes": [int(c) for c in clf.classes_]}
    if hasattr(clf, "support_vectors_"):
        spec.update({"kind": "svc", "kernel": clf.kernel, "gamma": float(clf._gamma)})
        for name in ("support_vectors", "dual_coef", "intercept", "n_support"):
            arrays[f"{key}/clf/{name}"] = getattr(clf, f"{name}_")
    else:
        spec["kind"] = "linear"
        arrays[f"{key}/clf/coef"], arrays[f"{key}/clf/intercept"] = clf.coef_, clf.intercept_
    params = {"fusion": m.fusion, "weights": [float(w) for w in m.weights],
              "standardise": m.scalers is not None, "pca": m.pcas is not None,
              "classifier": spec}
    return params, arrays


def _oof(exp: Experiment, streams: list, y: np.ndarray, inner: list, fusion: str,
         params: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold decision scores on the inner folds, their labels and inner-fold groups."""
    idx = np.arange(len(y))
    scores = np.concatenate([exp._fit_scores(streams, y, idx[fit], idx[val], fusion, params)
                             for fit, val in inner])
    rows = np.concatenate([val for _, val in inner])
    groups = np.concatenate([np.full(len(val), i) for i, (_, val) in enumerate(inner)])
    return filled(scores), y[rows], groups


def fit_head(settings: Settings, names: list[str], streams: list[list[np.ndarray]],
             y: np.ndarray, subjects: np.ndarray, honest: np.ndarray | None,
             chosen: list[dict], n_classes: int) -> tuple[dict, dict]:
    """The final classifier on every video: (spec, arrays) of vfer.bundle.Head. ``streams``
    holds each stream's segment features per video; ``chosen`` is metrics.json's ``chosen``
    (one entry per outer fold)."""
    base = {"aggregate": settings.aggregate, "streams": names,
            "normalise": [settings.normalisation(k) for k in range(len(names))]}
    if settings.kind == "softmax":
        return {**base, "kind": "softmax", "chosen": "nothing is fitted: the mean of the "
                "networks' segment class probabilities"}, {}
    exp = Experiment(settings, n_classes)
    prepared = exp.prepare(streams)
    idx = np.arange(len(y))
    inner = inner_splits(subjects, y, settings.inner_folds, settings.seed, None, honest)
    folds = len(chosen)
    if settings.fusion != "scores":
        (selected, params), times = most_frequent(
            [[c.get("selected", names), c["params"]] for c in chosen])
        which = [names.index(s) for s in selected]
        model = exp.fit_model([prepared[k] for k in which], y, idx, settings.fusion, params)
        spec, arrays = _export_model(model, "model0")
        temperature = 1.0
        if inner:
            oof, truth, _ = _oof(exp, [prepared[k] for k in which], y, inner, settings.fusion,
                                 params)
            temperature = Temperature(n_classes).fit(oof, truth).temperature
        return {**base, "kind": "features", "models": [spec], "selected": which,
                "temperature": temperature,
                "chosen": {"selected": selected, "params": params,
                           "how": f"chosen in {times} of the cross-validation's {folds} folds "
                                  "(the most frequent choice)",
                           "calibration": f"temperature fitted on out-of-fold decision scores "
                                          f"of {len(inner)} inner folds" if inner else
                                          "none: no inner folds (temperature 1)"}}, arrays
    if not inner:
        raise ValueError("score fusion calibrates each stream on inner folds, and these videos "
                         "give none (one subject, or no video that no network was trained on)")
    specs, arrays, temperatures, probs, picked = [], {}, [], [], []
    for k in range(len(names)):
        params, times = most_frequent([c["streams"][k]["params"] for c in chosen])
        model = exp.fit_model([prepared[k]], y, idx, "concat", params)
        spec, a = _export_model(model, f"model{k}")
        specs.append(spec)
        arrays.update(a)
        oof, truth, groups = _oof(exp, [prepared[k]], y, inner, "concat", params)
        calibration, p, _ = fit_score_model(lambda _: Temperature(n_classes), oof, truth, groups)
        temperatures.append(calibration.temperature)
        probs.append(p)
        picked.append({"stream": names[k], "params": params,
                       "how": f"chosen in {times} of {folds} folds (the most frequent choice)"})
    probs = np.stack(probs, 1)
    out = {**base, "models": specs, "temperatures": temperatures,
           "chosen": {"streams": picked, "inner_folds": len(inner)}}
    if settings.weights == "stacking":
        meta, _, info = fit_score_model(lambda C: Stacker(C, n_classes), stacking_inputs(probs),
                                        truth, groups, STACK_C)
        out["chosen"]["stacking"] = info
        return {**out, "kind": "stacking", "stacking": meta.theta.tolist()}, arrays
    weights = learned_weights(probs, truth) if settings.weights == "learned" and len(names) > 1 \
        else np.full(len(names), 1.0 / len(names))
    return {**out, "kind": "scores", "weights": [float(w) for w in weights]}, arrays


def preprocessing(faces: dict, segments: dict, flows: dict, dynamics: dict,
                  models: dict[str, dict]) -> dict:
    """The config subset that turns a video into the models' inputs: faces, segments and
    the flow and dynamic-image variants the models read (keys as in vfer.config.Plan)."""
    sources = [s for m in models.values() for s in m["sources"].values()]
    used_dynamics = {s["dynamic"] for s in sources if s["dynamic"]}
    used_flows = {s["flow"] for s in sources if s["flow"]} | {
        dynamics[k]["flow_key"] for k in used_dynamics if "flow_key" in dynamics[k]}
    return {"faces": faces, "segments": segments,
            "flows": {k: flows[k] for k in sorted(used_flows)},
            "dynamics": {k: dynamics[k] for k in sorted(used_dynamics)}}


def build(experiment: dict, models: dict[str, dict], preprocessing: dict, classes: list[str],
          aggregate: str, seed: int, folds: pd.DataFrame, features: dict[str, str],
          networks: dict[str, tuple[str, str]], metrics_path: str, faces: list[str],
          out: str) -> dict:
    """Fit the experiment's final classifier on every video's features (``features``: stream
    -> the final features file) and write the bundle to ``out``; return bundle.json's data.
    ``networks``: model -> (final state_dict, training record); ``faces``: the faces shards,
    whose frame rates of the training videos the bundle records (trained_on.fps)."""
    settings = Settings.from_config(experiment, aggregate, seed)
    metrics = json.loads(open(metrics_path).read())
    names = list(experiment["streams"])
    present = None
    for path in features.values():
        with FeaturesFile(path) as f:
            present = set(f.videos()) if present is None else present & set(f.videos())
    videos = folds.drop_duplicates("video_id")
    videos = videos[videos["video_id"].isin(present)].reset_index(drop=True)
    ids = videos["video_id"].tolist()
    class_index = {c: i for i, c in enumerate(classes)}
    y = videos["label"].map(class_index).to_numpy()
    subjects = videos["subject"].astype(str).to_numpy()
    if settings.kind == "softmax":
        streams = [load_scores_per_segment(features[n], ids) for n in names]
    else:
        streams = [load_features(features[n], ids) for n in names]
    fitted = set().union(*(fitted_videos(features[n]) for n in names))
    honest = ~np.isin(ids, sorted(fitted))
    if not honest.any():
        honest = None
    head, arrays = fit_head(settings, names, streams, y, subjects, honest, metrics["chosen"],
                            len(classes))
    used = {n: m for n, m in models.items() if n in names}
    meta = {"vfer_version": __version__, "experiment": experiment,
            "classes": list(classes), "preprocessing": preprocessing,
            "models": {n: {**m, "weights": {b: None for b in m.get("weights", {})}}
                       for n, m in used.items()},
            "head": head, "trained_on": {"videos": len(ids), "subjects": len(set(subjects)),
                                        "validated_on": "all videos" if honest is None else
                                        f"{int(honest.sum())} videos no network was trained on",
                                        "fps": frame_rates(faces, ids)},
            "cross_validation": {"accuracy": metrics["mean"]["accuracy"],
                                 "folds": len(metrics["folds"])}}
    check = bundle.Head(head, arrays, len(classes)).probabilities(streams)
    meta["trained_on"]["training_accuracy"] = float(np.mean(check.argmax(1) == y))
    bundle.write(out, meta, arrays, {n: networks[n] for n in used if n in networks})
    log.info("final model of %s: %d videos of %d subjects, training accuracy %.3f", names,
             len(ids), len(set(subjects)), meta["trained_on"]["training_accuracy"])
    return meta


def frame_rates(faces: list[str], video_ids: list[str]) -> list[float]:
    """[lowest, highest] frame rate (the faces stage's stored_fps) of ``video_ids``."""
    wanted, rates = set(video_ids), []
    for path in faces:
        with FacesFile(path) as f:
            rates += [float(f.video_attrs(v)["stored_fps"]) for v in f.videos() if v in wanted]
    if len(rates) != len(wanted):
        raise ValueError(f"{len(wanted) - len(rates)} training videos are in no faces shard")
    return [round(min(rates), 3), round(max(rates), 3)]


def load_scores_per_segment(path: str, video_ids: list[str]) -> list[np.ndarray]:
    """Each video's segment class probabilities (S x K) from a network's features file."""
    with FeaturesFile(path) as f:
        return [f.scores(v) for v in video_ids]
