"""``vfer predict``: a bundle's final model applied to new videos (docs/predict.md).

The videos go through the workflow's own stage functions with the bundle's settings (faces,
segments, flow, dynamic images, features with the bundle's weights), shard by shard in a work
folder under the output folder, then through the bundle's classifier. Written: predictions.tsv
(one row per input: the predicted class, one probability per class, the frames with a face,
the reason when the video could not be classified), segments.tsv (each segment's time and
class probabilities) and timelines/<video>.png. A video that fails (unreadable, no face) is a
row with its reason; the others go on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from vfer import __version__
from vfer import bundle as bundles
from vfer.io import file_sha256
from vfer.video import image_files, variable_rate_note

log = logging.getLogger(__name__)

#: Files taken as videos when a folder is given.
VIDEO_SUFFIXES = (".mp4", ".avi", ".flv", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v",
                  ".wmv")
TABLE_SUFFIXES = (".tsv", ".csv")


def _video_id(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.+-]", "_", name) or "video"
    vid, k = base, 1
    while vid in taken:
        k += 1
        vid = f"{base}-{k}"
    taken.add(vid)
    return vid


def collect(inputs: list[str | os.PathLike]) -> pd.DataFrame:
    """The videos to predict (columns video_id, path and, from a samples table, label):
    video files, image-sequence folders (a folder of frame images), folders of videos
    (searched recursively) and samples tables (.tsv/.csv with a ``path`` column, relative to
    the table's folder; ``video_id`` and ``label`` are kept when present)."""
    from vfer.samples import read_table

    rows, taken = [], set()
    for item in map(Path, inputs):
        if item.is_file() and item.suffix.lower() in TABLE_SUFFIXES:
            table = read_table(item)
            if "path" not in table:
                raise ValueError(f"{item}: a samples table needs a path column")
            for r in table.to_dict("records"):
                path = Path(r["path"]) if Path(r["path"]).is_absolute() \
                    else item.parent / r["path"]
                vid = _video_id(str(r.get("video_id") or path.stem), taken)
                rows.append({"video_id": vid, "path": str(path),
                             **({"label": r["label"]} if "label" in r else {})})
        elif item.is_dir() and not image_files(item):
            found = sorted(p for p in item.rglob("*")
                           if (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
                           or (p.is_dir() and image_files(p)))  # image-sequence folders
            if not found:
                raise ValueError(f"{item}: neither frame images nor videos "
                                 f"({', '.join(VIDEO_SUFFIXES)}) in it")
            rows += [{"video_id": _video_id(p.stem if p.is_file() else p.name, taken),
                      "path": str(p)} for p in found]
        else:  # a video, an image sequence, or a missing file (a row with its reason)
            rows.append({"video_id": _video_id(item.stem or item.name, taken),
                         "path": str(item)})
    return pd.DataFrame(rows)


def _shard_files(work: Path, preprocessing: dict) -> dict:
    files = {"faces": work / "faces.h5", "segments": work / "segments.h5",
             "failures": work / "failures.tsv", "sheet": work / "contact.png"}
    for key in preprocessing["flows"]:
        files[f"flow:{key}"] = work / f"flow-{key}.h5"
    for key in preprocessing["dynamics"]:
        files[f"dynamic:{key}"] = work / f"dynamic-{key.replace('/', '-')}.h5"
    return files


def _source_files(source: dict, files: dict) -> dict:
    from vfer.nets.registry import INPUTS

    paths = {"faces": files["faces"], "segments": files["segments"],
             "flow": source["flow"] and files[f"flow:{source['flow']}"],
             "dynamic": source["dynamic"] and files[f"dynamic:{source['dynamic']}"]}
    return {s: str(paths[s]) for s in INPUTS.meta(source["input"])["stages"]}


def run_stages(b: bundles.Bundle, videos: list[tuple[str, str]], work: Path, device,
               threads: int = 1) -> dict[str, str]:
    """Faces .. features of one shard of videos in ``work``; returns {video: failure reason}
    for the videos that failed in the faces stage (the stages' own rules)."""
    from vfer import dynamic, faces, features, flow, segments
    from vfer.store import FacesFile

    pre, meta = b.meta["preprocessing"], b.meta
    files = _shard_files(work, pre)
    provenance = {"rule": "predict", "params_sha256": "", "config_sha256": ""}
    params = {**pre["faces"], "on_error": "skip"}
    failures = faces.process_shard(videos, str(files["faces"]), str(files["failures"]),
                                   str(files["sheet"]), params, provenance)
    failed = {f["video_id"]: f["reason"] for f in failures}
    with FacesFile(files["faces"]) as f:
        if not f.videos():
            return failed
    segments.process_shard(str(files["faces"]), str(files["segments"]), pre["segments"],
                           provenance)
    for key, p in pre["flows"].items():
        flow.process_shard(str(files["faces"]), str(files["segments"]),
                           str(files[f"flow:{key}"]), p["method"], dict(p["params"]),
                           p["bound"], p["consecutive"], provenance, threads=threads,
                           store_raw=p["store_raw"], device=device.type)
    for key, p in pre["dynamics"].items():
        source = key.split("/", 1)[0]
        dynamic.process_shard(source, str(files["faces"]), str(files["segments"]),
                              str(files[f"flow:{p['flow_key']}"]) if source == "flow" else None,
                              str(files[f"dynamic:{key}"]), p, provenance)
    for name, model in meta["models"].items():
        shards = {branch: [_source_files(s, files)] for branch, s in model["sources"].items()}
        out = str(work / f"features-{name}.h5")
        if model["kind"] == "descriptor":
            features.describe(model, shards["main"], out, provenance)
        else:
            features.extract_model(model, shards, b.classes, device, out, provenance,
                                   model_path=str(b.weights(name)), info_path=str(b.record(name)))
    return failed


def _read_outputs(b: bundles.Bundle, work: Path, ids: list[str]) -> dict[str, dict]:
    """Per video that has every stream's features: its streams' segment features (or segment
    probabilities for a softmax head), segment times (s), frames, face frames and 8 crops."""
    from vfer.segments import face_share
    from vfer.store import FacesFile, FeaturesFile, SegmentsFile

    softmax = b.meta["head"]["kind"] == "softmax"
    out = {}
    with FacesFile(work / "faces.h5") as faces, SegmentsFile(work / "segments.h5") as segs:
        for vid in ids:
            if vid not in faces:
                continue
            streams = []
            for name in b.meta["head"]["streams"]:
                with FeaturesFile(work / f"features-{name}.h5") as f:
                    if vid in f:
                        streams.append(f.scores(vid) if softmax else f.features(vid))
            if len(streams) != len(b.meta["head"]["streams"]):
                continue
            attrs = faces.video_attrs(vid)
            fps = float(attrs.get("stored_fps") or 0) or 1.0
            index = segs.segment_index(vid)
            n = faces.n_frames(vid)
            picks = np.unique(np.linspace(0, n - 1, 8).round().astype(int))
            detected = faces.detected(vid).astype(bool)
            per_segment = len(index) == len(streams[0])
            out[vid] = {"streams": streams, "frames": n, "faces": int(detected.sum()),
                        "times": index.mean(1) / fps if per_segment
                        else np.arange(len(streams[0]), dtype=float),
                        "face_share": face_share(index, detected) if per_segment
                        else np.full(len(streams[0]), np.nan),
                        "fps": fps, "crops": faces.frames(vid, picks), "crop_times": picks / fps,
                        "intervals": json.loads(attrs.get("frame_intervals_ms", "null")),
                        "crop_detected": detected[picks]}
    return out


def fps_note(fps: float, trained: list[float] | None) -> str:
    """A note when a video's frame rate is outside the training videos' range (``trained``:
    [lowest, highest]) by more than 10%: its segments then span another time, and the motion
    between two frames differs from what the model learnt."""
    if not trained or trained[0] / 1.1 <= fps <= trained[1] * 1.1:
        return ""
    return (f"{fps:g} fps, the model's training videos {trained[0]:g}-{trained[1]:g} fps: "
            "its segments span another time than in training")


def timeline(path: Path, video_id: str, predicted: str, classes: list[str], times: np.ndarray,
             probs: np.ndarray, crops: np.ndarray, crop_times: np.ndarray,
             detected: np.ndarray) -> None:
    """A PNG: each class's probability per segment over time, above a strip of face crops."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(9, 4.6))
    grid = fig.add_gridspec(2, len(crops), height_ratios=[2.2, 1])
    ax = fig.add_subplot(grid[0, :])
    for k, c in enumerate(classes):
        ax.plot(times, probs[:, k], marker="o", markersize=3, label=c)
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s, segment centre)")
    ax.set_ylabel("probability")
    ax.set_title(f"{video_id}: {predicted}")
    ax.legend(fontsize=7, ncol=min(len(classes), 7), loc="upper center",
              bbox_to_anchor=(0.5, -0.25), frameon=False)
    for k, (crop, t, ok) in enumerate(zip(crops, crop_times, detected)):
        a = fig.add_subplot(grid[1, k])
        a.imshow(crop)
        a.set_title(f"{t:.1f} s" + ("" if ok else " (no face)"), fontsize=7,
                    color="black" if ok else "red")
        a.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


@contextlib.contextmanager
def _logged(stream):
    """vfer's log messages (INFO and up) to ``stream`` while the block runs."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("vfer")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def predict(model: str | os.PathLike, inputs, out: str | os.PathLike = "predictions",
            device: str = "auto", batch: int = 32, keep_work: bool = False,
            progress: bool = True) -> pd.DataFrame:
    """Predict every input (see ``collect``) with a bundle; write predictions.tsv,
    segments.tsv, timelines/ and run.json (which bundle, vfer version, device, when) under
    ``out`` and return the predictions table. The stages' own messages go to
    ``out``/predict.log."""
    from tqdm import tqdm

    from vfer.runtime import select_device

    if batch < 1:
        raise ValueError(f"batch {batch}: videos per shard must be at least 1")
    b = bundles.read(model)
    videos = collect([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs))
    if videos.empty:
        raise ValueError("nothing to predict: no input given")
    out = Path(out)
    work_root = out / "work"
    for old in (out / "timelines").glob("*.png"):  # a previous run's, into the same folder
        old.unlink()
    torch_device = select_device(device)
    classes = b.classes
    trained_fps = b.meta.get("trained_on", {}).get("fps")
    rows, segment_rows = [], []
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    bar = tqdm(total=len(videos), desc="predict", unit="video", file=sys.stderr,
               disable=not progress)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "predict.log", "w") as logfile, _logged(logfile):
        for start in range(0, len(videos), batch):
            part = videos.iloc[start:start + batch]
            work = work_root / f"s{start // batch:04d}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            pairs = list(zip(part["video_id"], part["path"]))
            with contextlib.redirect_stderr(logfile):
                try:
                    failed = run_stages(b, pairs, work, torch_device)
                    results = _read_outputs(b, work, list(part["video_id"]))
                except Exception as exc:  # a stage that fails for the whole shard
                    log.exception("shard %s", work.name)
                    failed, results = {v: f"{type(exc).__name__}: {exc}"
                                       for v in part["video_id"]}, {}
            for r in part.to_dict("records"):
                row = {"video": r["video_id"], "path": r["path"], "predicted": ""}
                if "label" in r:
                    row["label"] = r["label"]
                got = results.get(r["video_id"])
                if got is None:
                    row.update({c: np.nan for c in classes})
                    row.update({"frames": 0, "faces_found": 0,
                                "failure": failed.get(r["video_id"],
                                                      "no features (see predict.log)"),
                                "note": ""})
                    rows.append(row)
                    continue
                probs = b.head.probabilities([[s] for s in got["streams"]])[0]
                per_segment = b.head.probabilities(
                    [[s[j:j + 1] for j in range(len(s))] for s in got["streams"]])
                row.update({"predicted": classes[int(probs.argmax())],
                            **{c: float(p) for c, p in zip(classes, probs)},
                            "frames": got["frames"], "faces_found": got["faces"],
                            "failure": "",
                            "note": "; ".join(n for n in (fps_note(got["fps"], trained_fps),
                                                          variable_rate_note(got["intervals"]))
                                              if n)})
                if row["note"]:
                    log.warning("%s: %s", r["video_id"], row["note"])
                rows.append(row)
                for j, (t, share, p) in enumerate(zip(got["times"], got["face_share"],
                                                       per_segment)):
                    segment_rows.append({"video": r["video_id"], "segment": j,
                                         "time": float(t), "face_share": float(share),
                                         "predicted": classes[int(p.argmax())],
                                         **{c: float(v) for c, v in zip(classes, p)}})
                timeline(out / "timelines" / f"{r['video_id']}.png", r["video_id"],
                         row["predicted"], classes,
                         got["times"], per_segment, got["crops"], got["crop_times"],
                         got["crop_detected"])
            if not keep_work:
                shutil.rmtree(work, ignore_errors=True)
            bar.update(len(part))
    bar.close()
    if not keep_work and work_root.is_dir() and not any(work_root.iterdir()):
        work_root.rmdir()
    table = pd.DataFrame(rows)
    table.to_csv(out / "predictions.tsv", sep="\t", index=False, float_format="%.6f")
    record = {"bundle": str(Path(model).resolve()),
              "bundle_manifest_sha256": file_sha256(Path(model) / bundles.MANIFEST),
              "experiment": b.meta["experiment"].get("name"),
              "bundle_vfer_version": b.meta.get("vfer_version"), "vfer_version": __version__,
              "device": str(torch_device), "started": started,
              "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "videos": len(table), "failed": int((table["failure"] != "").sum())}
    (out / "run.json").write_text(json.dumps(record, indent=1))
    pd.DataFrame(segment_rows,
                 columns=["video", "segment", "time", "face_share", "predicted", *classes]) \
        .to_csv(out / "segments.tsv", sep="\t", index=False, float_format="%.6f")
    return table
