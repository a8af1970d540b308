"""Final-model bundles and vfer predict: the numpy classifier equals scikit-learn's, a bundle
predicts the same twice and after moving, edited or pickle-bearing bundles are refused without
running anything, failures are rows with their reason."""

import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO, stage_defaults
from vfer import bundle, final
from vfer.config import load
from vfer.evaluate import FeatureModel, Settings

CLASSES = ["happiness", "surprise"]


@pytest.mark.parametrize("kind,kernel,n_classes,fusion", [
    ("svc", "linear", 3, "concat"), ("svc", "rbf", 4, "concat"), ("svc", "linear", 2, "concat"),
    ("linear_svc", "linear", 3, "concat"), ("logistic", "linear", 2, "concat"),
    ("svc", "rbf", 3, "sum")])
def test_numpy_classifier_equals_scikit_learn(kind, kernel, n_classes, fusion):
    rng = np.random.default_rng(n_classes)
    y = np.repeat(np.arange(n_classes), 12)
    blocks = [rng.normal(size=(len(y), 5)) + y[:, None], rng.normal(size=(len(y), 7)) * 3]
    s = Settings(kind=kind, kernel=kernel)
    model = FeatureModel(s, fusion, 0.7, "scale").fit(blocks, y, n_classes)
    spec, arrays = final._export_model(model, "m")
    test = [rng.normal(size=(9, 5)) + 1, rng.normal(size=(9, 7))]
    rebuilt = bundle.FeatureModel(spec, arrays, "m", n_classes).scores(test)
    np.testing.assert_allclose(rebuilt, model.scores(test), rtol=1e-9, atol=1e-9)
    assert (rebuilt.argmax(1) == model.scores(test).argmax(1)).all()


def _write_video(path, frames):
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, frames[0].shape[1::-1])
    for f in frames:
        out.write(f)
    out.release()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A bundle of a hog (descriptor) experiment fitted on 4 generated clips of 2 subjects,
    and inputs: the clips' table, a video without a face and a file that is no video."""
    from vfer.demo import generate
    from vfer.prediction import run_stages

    root = tmp_path_factory.mktemp("predict")
    generate(root / "data", seed=7, subjects=2, clips=1, classes=tuple(CLASSES), processes=2)
    samples = pd.read_csv(root / "data/samples.tsv", sep="\t")
    config = {"samples": "x.tsv", "classes": CLASSES,
              "streams": {"handcrafted": {"input": "frames", "backbone": "hog",
                                          "finetune": "none"}},
              "experiments": [{"name": "handcrafted", "streams": ["handcrafted"]}]}
    plan = load(config)
    models = {"handcrafted": plan.models["handcrafted"]}
    pre = final.preprocessing(stage_defaults("faces", size=[64, 64]), stage_defaults("segments"),
                              plan.flows, plan.dynamics, models)
    meta = {"preprocessing": pre, "models": models}
    work = root / "train"
    work.mkdir()
    videos = [(v, str(root / "data" / p)) for v, p in zip(samples["video_id"], samples["path"])]
    assert run_stages(SimpleNamespace(meta=meta, classes=CLASSES), videos, work, None) == {}
    from vfer.evaluate import load_features

    feats = [load_features(str(work / "features-handcrafted.h5"), list(samples["video_id"]))]
    y = samples["label"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    chosen = [{"params": {"C": 1.0, "gamma": "scale"}, "selected": ["handcrafted"]}] * 2
    head, arrays = final.fit_head(Settings(), ["handcrafted"], feats, y,
                                  samples["subject"].astype(str).to_numpy(), None, chosen, 2)
    assert head["kind"] == "features" and head["chosen"]["how"].startswith("chosen in 2 of")
    meta.update({"classes": CLASSES, "head": head, "vfer_version": "test",
                 "experiment": plan.experiments["handcrafted"]})
    bundle.write(root / "bundle", meta, arrays, {})
    rng = np.random.default_rng(0)
    _write_video(root / "no_face.avi", [rng.integers(0, 40, (120, 160, 3), np.uint8)] * 20)
    (root / "text.mp4").write_text("not a video\n")
    inputs = [str(root / "data/samples.tsv"), str(root / "no_face.avi"), str(root / "text.mp4")]
    return root, inputs


def test_predictions_rows_probabilities_failures_and_timelines(made):
    from vfer.prediction import predict

    root, inputs = made
    table = predict(root / "bundle", inputs, out=root / "out1", progress=False)
    written = pd.read_csv(root / "out1/predictions.tsv", sep="\t", keep_default_na=False)
    assert list(written["video"]) == list(table["video"]) and len(table) == 6
    ok = table[table["failure"] == ""]
    assert len(ok) == 4 and (ok["predicted"] == ok["label"]).all()
    np.testing.assert_allclose(ok[CLASSES].sum(axis=1), 1.0, atol=1e-9)
    assert (ok["faces_found"] > 0).all()
    reasons = dict(zip(table["video"], table["failure"]))
    assert reasons["no_face"].startswith("no face in 20 decoded frames")
    assert reasons["text"].startswith("cannot decode")
    segments = pd.read_csv(root / "out1/segments.tsv", sep="\t")
    assert set(segments["video"]) == set(ok["video"])
    np.testing.assert_allclose(segments[CLASSES].sum(axis=1), 1.0, atol=1e-9)
    assert (segments["face_share"] >= 0.5).all()
    assert sorted(p.stem for p in (root / "out1/timelines").glob("*.png")) == sorted(ok["video"])
    run = json.loads((root / "out1/run.json").read_text())
    assert run["bundle_manifest_sha256"] == bundle.file_sha256(root / "bundle/manifest.json")
    assert (run["experiment"], run["videos"], run["failed"]) == ("handcrafted", 6, 2)
    assert not (root / "out1/work").exists()
    predict(root / "bundle", inputs[1:], out=root / "out1", progress=False)  # the same folder
    assert not list((root / "out1/timelines").glob("*.png"))  # no timelines of the first run
    with pytest.raises(ValueError, match="batch 0: videos per shard must be at least 1"):
        predict(root / "bundle", inputs, out=root / "out1", batch=0, progress=False)
    out = subprocess.run([sys.executable, "-m", "vfer", "predict", "--model", str(root / "bundle"),
                          *inputs[1:], "-o", str(root / "out2")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 1 and "no video was classified" in out.stderr


def test_a_frame_rate_unlike_the_training_videos_is_noted():
    from vfer.prediction import fps_note

    assert fps_note(25.0, [25.0, 30.0]) == fps_note(32.9, [25.0, 30.0]) == ""
    assert fps_note(75.0, [25.0, 30.0]).startswith("75 fps, the model's training videos 25-30")
    assert fps_note(12.0, [25.0, 25.0]) != "" and fps_note(12.0, None) == ""


def test_a_folder_input_holds_videos_and_image_sequences(tmp_path):
    from vfer.prediction import collect

    (tmp_path / "mix/sub").mkdir(parents=True)
    (tmp_path / "mix/sub/clip.avi").write_bytes(b"")
    (tmp_path / "mix/seqA").mkdir()
    for k in range(3):
        cv2.imwrite(str(tmp_path / f"mix/seqA/frame{k}.png"), np.zeros((8, 8, 3), np.uint8))
    table = collect([tmp_path / "mix"])
    assert table["video_id"].tolist() == ["seqA", "clip"]
    assert table["path"].tolist() == [str(tmp_path / "mix/seqA"), str(tmp_path / "mix/sub/clip.avi")]


def test_same_predictions_twice_and_after_moving_the_bundle(made):
    from vfer.prediction import predict

    root, inputs = made
    first = predict(root / "bundle", inputs[:1], out=root / "a", progress=False)
    again = predict(root / "bundle", inputs[:1], out=root / "b", progress=False)
    moved = root / "elsewhere" / "renamed"
    shutil.copytree(root / "bundle", moved)
    shutil.rmtree(root / "bundle")
    try:
        third = predict(moved, inputs[:1], out=root / "c", progress=False)
    finally:
        shutil.move(moved, root / "bundle")
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(first, third)


def _copy(root, name):
    target = root / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(root / "bundle", target)
    return target


def _rehash(folder):
    """What an attacker would do: list every file in the manifest with its new hash."""
    files = {p.relative_to(folder).as_posix(): bundle.file_sha256(p)
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != bundle.MANIFEST}
    (folder / bundle.MANIFEST).write_text(json.dumps({"format": bundle.FORMAT, "files": files}))


def test_an_edited_file_is_refused_naming_it(made):
    root, _ = made
    b = _copy(root, "edited")
    meta = json.loads((b / "bundle.json").read_text())
    meta["head"]["temperature"] *= 2
    (b / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(bundle.BundleError, match=r"bundle\.json: sha256 differs"):
        bundle.read(b)
    b = _copy(root, "extra")
    (b / "notes.npz").write_bytes(b"")
    with pytest.raises(bundle.BundleError, match=r"notes\.npz: not in the bundle's manifest"):
        bundle.read(b)


def test_a_bundle_of_another_format_or_with_weights_that_do_not_fit_is_refused(made, tmp_path):
    import torch

    from vfer.training import initial_network

    root, _ = made
    b = _copy(root, "old")
    meta = json.loads((b / "bundle.json").read_text())
    (b / "bundle.json").write_text(json.dumps({**meta, "format": 1}))
    _rehash(b)
    with pytest.raises(bundle.BundleError, match=rf"bundle format 1 \(vfer test\); this vfer "
                                                 rf"reads format {bundle.FORMAT}: rebuild it"):
        bundle.read(b)
    model = load({"samples": "x.tsv", "classes": CLASSES,
                  "streams": {"s": {"input": "frames", "backbone": "small_cnn", "size": 16}},
                  "experiments": [{"name": "s", "streams": ["s"]}]}).models["s"]
    record = tmp_path / "s.json"
    record.write_text("{}")
    for n_classes, fits in ((len(CLASSES), True), (3, False)):
        network, _ = initial_network(model, [f"c{k}" for k in range(n_classes)])
        torch.save(network.state_dict(), tmp_path / "s.pt")
        bundle.write(tmp_path / "b", {**meta, "models": {"s": model}},
                     dict(np.load(b / "head.npz")), {"s": (tmp_path / "s.pt", record)})
        if fits:
            assert bundle.read(tmp_path / "b").meta["format"] == bundle.FORMAT
        else:
            with pytest.raises(bundle.BundleError, match=r"s\.pt: does not fit the network "
                                                         r"bundle\.json describes"):
                bundle.read(tmp_path / "b")


class Payload:
    """Unpickling it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(made):
    import torch

    root, _ = made
    marker = root / "marker"
    b = _copy(root, "evil_npz")
    arrays = dict(np.load(b / "head.npz"))
    arrays["evil"] = np.array([Payload(marker)], dtype=object)
    np.savez(b / "head.npz", **arrays)
    _rehash(b)
    with pytest.raises(bundle.BundleError, match=r"head\.npz: refused"):
        bundle.read(b)
    b = _copy(root, "evil_pt")
    torch.save({"weight": torch.zeros(2), "x": Payload(marker)}, b / "models" / "evil.pt")
    meta = json.loads((b / "bundle.json").read_text())
    meta["models"]["evil"] = {"kind": "network"}
    (b / "bundle.json").write_text(json.dumps(meta))
    _rehash(b)
    with pytest.raises(bundle.BundleError, match=r"evil\.pt: refused, not a plain torch"):
        bundle.read(b)
    b = _copy(root, "evil_pkl")
    (b / "head.pkl").write_bytes(b"\x80\x04K\x01.")
    _rehash(b)
    with pytest.raises(bundle.BundleError, match=r"head\.pkl: a bundle holds only"):
        bundle.read(b)
    assert not marker.exists()


def test_vfer_import_stays_light_and_offers_predict():
    code = "import sys, vfer; assert callable(vfer.predict); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.workflow
def test_final_model_of_the_tiny_workflow_predicts(run, tmp_path):
    """results/final/<experiment> of a network experiment (softmax head), then vfer predict."""
    from tests.tiny import snakemake

    work = tmp_path / "w"
    shutil.copytree(run, work, symlinks=True)
    result = snakemake(work, "results/final/rgb_flow")
    assert result.returncode == 0, result.stderr[-3000:]
    folder = work / "results/final/rgb_flow"
    b = bundle.read(folder)
    assert b.meta["head"]["kind"] == "softmax" and set(b.meta["models"]) == {"rgb_flow"}
    low, high = b.meta["trained_on"]["fps"]
    assert 0 < low <= high
    record = json.loads((folder / "models/rgb_flow.json").read_text())
    assert record["fold"] == -1 and len(record["train_subjects"]) == 4
    out = subprocess.run([sys.executable, "-m", "vfer", "predict", "--model", str(folder),
                          str(work / "data/samples.tsv"), "-o", str(tmp_path / "p")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    table = pd.read_csv(tmp_path / "p/predictions.tsv", sep="\t", keep_default_na=False)
    assert len(table) == 8 and (table["failure"] == "").all() and (table["note"] == "").all()
    np.testing.assert_allclose(table[CLASSES].sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.realdata
def test_a_variable_frame_rate_is_noted(made, real_data, tmp_path):
    from vfer.prediction import predict

    root, _ = made
    clips = [real_data / "unlabeled/face_noface.mov", real_data / "cremad/1001_DFA_ANG_XX.flv"]
    table = predict(root / "bundle", [str(c) for c in clips], out=tmp_path, progress=False)
    notes = dict(zip(table["video"], table["note"]))
    assert notes["face_noface"].startswith("variable frame rate (frames 13.7-50.0 ms apart)")
    assert notes["1001_DFA_ANG_XX"] == ""  # 29.97 fps in whole milliseconds: constant
