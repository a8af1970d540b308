"""A final model as a folder that loads without running anyone's code (docs/predict.md).

Layout of a bundle folder:

* ``bundle.json``: vfer's version, the classes, the config subset preprocessing needs (faces,
  segments, the flow and dynamic-image variants used), the models (networks and descriptors)
  and the experiment of the plan, the classifier's parameters (``head``) and what the
  cross-validation chose that the final model reuses.
* ``head.npz``: the classifier's arrays (scaling, projection, support vectors, coefficients),
  read with ``numpy.load(allow_pickle=False)``; the classifier is rebuilt in numpy.
* ``models/<name>.pt``: each network's state_dict, read with ``torch.load(weights_only=True)``;
  ``models/<name>.json``: what it was trained on.
* ``manifest.json``: the sha256 of every other file. Reading verifies it first: a file whose
  hash differs, a file missing or not listed, or a file of another kind is refused, naming it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import softmax

from vfer.fusion import fuse, normalise_rows
from vfer.io import file_sha256

MANIFEST = "manifest.json"
#: The layout of bundle.json and head.npz that this vfer reads; raised whenever it changes
#: (2: segments.min_face in the preprocessing).
FORMAT = 2
#: The only kinds of file a bundle holds (nothing that unpickles arbitrary objects).
SUFFIXES = (".json", ".npz", ".pt")


class BundleError(ValueError):
    """A bundle that is missing, damaged, edited or holds what could run code."""


# --- the classifier rebuilt in numpy -----------------------------------------------------------

def _svc_decision(p: dict, a: dict, x: np.ndarray) -> np.ndarray:
    """libsvm's one-vs-one decision values (N x pairs) of an SVC from its support vectors,
    dual coefficients and intercepts, turned into one-vs-rest scores as scikit-learn's
    ``decision_function_shape="ovr"`` does (votes plus bounded summed confidences)."""
    sv, dual, intercept = a["support_vectors"], a["dual_coef"], a["intercept"]
    if p["kernel"] == "linear":
        k = x @ sv.T
    else:  # rbf
        d = (x * x).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2 * x @ sv.T
        k = np.exp(-p["gamma"] * np.maximum(d, 0))
    n = len(p["classes"])
    if n == 2:
        return k @ dual[0] + intercept[0]
    start = np.concatenate([[0], np.cumsum(a["n_support"])])
    part = [slice(start[i], start[i + 1]) for i in range(n)]
    votes, confidence = np.zeros((len(x), n)), np.zeros((len(x), n))
    pair = 0
    for i in range(n):
        for j in range(i + 1, n):
            dec = k[:, part[i]] @ dual[j - 1, part[i]] + k[:, part[j]] @ dual[i, part[j]] \
                + intercept[pair]
            confidence[:, i] += dec
            confidence[:, j] -= dec
            votes[:, i] += dec >= 0
            votes[:, j] += dec < 0
            pair += 1
    return votes + confidence / (3 * (np.abs(confidence) + 1))


def decision(p: dict, a: dict, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Decision scores of every class (NaN for classes the classifier never saw), as
    vfer.evaluate.class_scores gives them."""
    d = _svc_decision(p, a, x) if p["kind"] == "svc" else x @ a["coef"].T + a["intercept"]
    if d.ndim == 1 or d.shape[1] == 1:
        d = d.reshape(len(x))
        d = np.stack([-d, d], axis=1)
    out = np.full((len(x), n_classes), np.nan)
    out[:, p["classes"]] = d
    return out


def filled(scores: np.ndarray) -> np.ndarray:
    """NaN scores (unseen classes) as the lowest score minus 1 (vfer.evaluate.filled)."""
    finite = scores[np.isfinite(scores)]
    return np.where(np.isfinite(scores), scores, (finite.min() if finite.size else 0.0) - 1.0)


class FeatureModel:
    """A fitted vfer.evaluate.FeatureModel: standardise, project, weight, fuse, classify."""

    def __init__(self, p: dict, arrays: dict, key: str, n_classes: int):
        self.p, self.n_classes = p, n_classes
        self.a = {name[len(key) + 1:]: v for name, v in arrays.items()
                  if name.startswith(key + "/")}

    def scores(self, blocks: list[np.ndarray]) -> np.ndarray:
        z = []
        for i, b in enumerate(blocks):
            b = np.asarray(b, np.float64)
            if self.p["standardise"]:
                b = (b - self.a[f"scaler{i}/mean"]) / self.a[f"scaler{i}/scale"]
            if self.p["pca"]:
                b = (b - self.a[f"pca{i}/mean"]) @ self.a[f"pca{i}/components"].T
            z.append(self.p["weights"][i] * b)
        clf = {k[4:]: v for k, v in self.a.items() if k.startswith("clf/")}
        return decision(self.p["classifier"], clf, fuse(z, self.p["fusion"]), self.n_classes)


def stacking_inputs(probs: np.ndarray) -> np.ndarray:
    """vfer.evaluate.stacking_inputs: log of the streams' mean probability, then each one's."""
    return np.log(np.clip(np.concatenate([probs.mean(1, keepdims=True), probs], 1), 1e-4, None))


class Head:
    """The experiment's classifier on top of the streams' segment features (or, ``softmax``,
    the networks' segment class probabilities): class probabilities per video."""

    def __init__(self, spec: dict, arrays: dict, n_classes: int):
        self.spec, self.n = spec, n_classes
        self.models = [FeatureModel(m, arrays, f"model{i}", n_classes)
                       for i, m in enumerate(spec.get("models", []))]

    def _samples(self, per_video: list[np.ndarray], stream: int) -> tuple[np.ndarray, list]:
        method = self.spec["normalise"][stream]
        if self.spec["aggregate"] == "mean_features":
            return normalise_rows(np.stack([x.mean(0) for x in per_video]), method), None
        return normalise_rows(np.concatenate(per_video), method), [len(x) for x in per_video]

    def _scores(self, model: FeatureModel, streams: list[list[np.ndarray]],
                which: list[int]) -> np.ndarray:
        """Video decision scores (segments' scores averaged with ``mean_scores``)."""
        samples = [self._samples(streams[k], k) for k in which]
        s = model.scores([x for x, _ in samples])
        counts = samples[0][1]
        if counts is None:
            return s
        return np.stack([part.mean(0) for part in np.split(s, np.cumsum(counts)[:-1])])

    def probabilities(self, streams: list[list[np.ndarray]]) -> np.ndarray:
        """Class probabilities (N x K, rows summing to 1) of N videos; ``streams[k][i]`` is
        video i's segment features (S x D) of stream k, or its segment probabilities for a
        ``softmax`` head."""
        kind = self.spec["kind"]
        if kind == "softmax":
            return np.mean([np.stack([x.mean(0) for x in v]) for v in streams], axis=0)
        if kind == "features":
            s = filled(self._scores(self.models[0], streams, self.spec["selected"]))
            return softmax(s / self.spec["temperature"], axis=1)
        probs = np.stack([softmax(filled(self._scores(m, streams, [k])) / t, axis=1)
                          for k, (m, t) in enumerate(zip(self.models,
                                                         self.spec["temperatures"]))], 1)
        if kind == "stacking":
            theta = np.asarray(self.spec["stacking"])
            z = stacking_inputs(probs)
            return softmax(np.einsum("nmk,m->nk", z, theta[:z.shape[1]]) + theta[z.shape[1]:],
                           axis=1)
        return np.einsum("nsk,s->nk", probs, np.asarray(self.spec["weights"]))


# --- writing and reading -----------------------------------------------------------------------

def write(folder: str | os.PathLike, meta: dict, arrays: dict[str, np.ndarray],
          networks: dict[str, tuple[str, str]]) -> None:
    """Write a bundle: ``meta`` to bundle.json, ``arrays`` to head.npz, each network's
    (state_dict file, training record) to models/, and the manifest; atomically (the folder
    appears complete or not at all)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "models").mkdir(parents=True)
    (tmp / "bundle.json").write_text(json.dumps({**meta, "format": FORMAT}, indent=1))
    for name, v in arrays.items():
        if np.asarray(v).dtype == object:
            raise BundleError(f"array {name}: object arrays would need pickle")
    np.savez(tmp / "head.npz", **{k: np.asarray(v) for k, v in arrays.items()})
    for name, (weights, record) in networks.items():
        shutil.copyfile(weights, tmp / "models" / f"{name}.pt")
        shutil.copyfile(record, tmp / "models" / f"{name}.json")
    files = {p.relative_to(tmp).as_posix(): file_sha256(p)
             for p in sorted(tmp.rglob("*")) if p.is_file()}
    (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": files}, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _marker(path: Path) -> bool:
    """Snakemake's empty timestamp file in a directory output (it holds nothing)."""
    return path.name == ".snakemake_timestamp" and not path.is_symlink() \
        and path.stat().st_size == 0


def verify(folder: str | os.PathLike) -> dict[str, str]:
    """Check every file of a bundle against its manifest; return {file: sha256}."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        listed = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{folder / MANIFEST}: not a vfer bundle manifest ({exc})") from None
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*")
               if (p.is_file() or p.is_symlink()) and not _marker(p)} - {MANIFEST}
    for name in sorted(present - set(listed)):
        raise BundleError(f"{folder / name}: not in the bundle's manifest; refusing to load a "
                          "bundle with files it does not list")
    for name in sorted(listed):
        path = folder / name
        if path.suffix not in SUFFIXES or ".." in Path(name).parts:
            raise BundleError(f"{path}: a bundle holds only {', '.join(SUFFIXES)} files")
        if name not in present:
            raise BundleError(f"{path}: listed in the manifest but missing")
        if path.is_symlink():
            raise BundleError(f"{path}: a link; a bundle holds plain files")
        if file_sha256(path) != listed[name]:
            raise BundleError(f"{path}: sha256 differs from the manifest (the file was changed "
                              "after the bundle was written)")
    return listed


@dataclass
class Bundle:
    """A verified bundle: its folder, bundle.json and classifier."""

    folder: Path
    meta: dict
    head: Head

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    def weights(self, model: str) -> Path:
        return self.folder / "models" / f"{model}.pt"

    def record(self, model: str) -> Path:
        return self.folder / "models" / f"{model}.json"


def load_state_dict(path: str | os.PathLike) -> dict:
    """A state_dict read with ``weights_only=True``: a pickle that names anything but
    tensors and plain containers is refused before any of it runs."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{path}: refused, not a plain torch state_dict ({first})") from None


def read(folder: str | os.PathLike) -> Bundle:
    """Verify a bundle and read it: bundle.json, head.npz (no pickle), every network's
    weights (weights_only). Raises BundleError naming the file at fault."""
    folder = Path(folder)
    verify(folder)
    try:
        meta = json.loads((folder / "bundle.json").read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{folder / 'bundle.json'}: {exc}") from None
    if meta.get("format") != FORMAT:
        raise BundleError(f"{folder / 'bundle.json'}: bundle format {meta.get('format')} "
                          f"(vfer {meta.get('vfer_version')}); this vfer reads format {FORMAT}: "
                          "rebuild it with snakemake results/final/<experiment>")
    try:
        with np.load(folder / "head.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"{folder / 'head.npz'}: refused ({exc})") from None
    for name, model in meta["models"].items():
        if model["kind"] == "network":
            _check_network(folder / "models" / f"{name}.pt", model, meta["classes"])
    return Bundle(folder, meta, Head(meta["head"], arrays, len(meta["classes"])))


def _check_network(path: Path, model: dict, classes: list[str]) -> None:
    """Refuse weights that are not a plain state_dict or do not fit the model's network."""
    from vfer.training import initial_network

    state = load_state_dict(path)
    try:
        network, _ = initial_network(model, classes)
        network.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise BundleError(f"{path}: does not fit the network bundle.json describes "
                          f"({first})") from None
