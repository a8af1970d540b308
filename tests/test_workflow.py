"""Snakemake on a tiny generated dataset in a temporary folder: outputs, caching, reruns."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import h5py
import pandas as pd
import pytest
import yaml

from tests.tiny import CONFIG, STREAM, declared_gpus, planned, snakemake, write_config

pytestmark = pytest.mark.workflow


def test_outputs_of_every_stage(run):
    summary = (run / "results/summary.md").read_text()
    for name in ("spatial", "temporal", "fused", "rgb_flow"):
        assert f"| {name} |" in summary
        metrics = json.loads((run / f"results/experiments/{name}/metrics.json").read_text())
        assert len(metrics["folds"]) == 2
        assert sum(f["test_videos"] for f in metrics["folds"]) == 8
        assert 0.0 <= metrics["mean"]["accuracy"]["mean"] <= 1.0
        predictions = pd.read_csv(run / f"results/experiments/{name}/predictions.tsv", sep="\t")
        assert len(predictions) == 8 and predictions["video_id"].is_unique
        assert (run / f"results/experiments/{name}/confusion.png").stat().st_size > 1000
    with h5py.File(run / "results/faces/s0000.h5") as f:
        assert f.attrs["stage"] == "faces" and len(f) == 4
        video = next(iter(f.values()))
        assert video["frames"].shape[1:] == (64, 64, 3)
        assert video.attrs["decoded_frames"] == video["frames"].shape[0]
    assert (run / "results/faces/s0001.contact.png").stat().st_size > 1000
    assert (run / "results/preview/s0000.png").stat().st_size > 1000
    flows = next((run / "results/flow").glob("farneback-*/s0000.h5"))
    with h5py.File(flows) as f:
        video = next(iter(f.values()))
        assert video["images"].dtype == "uint8" and "flow" not in video
        assert len(video["pairs"]) == video["images"].shape[0]


def test_features_come_from_models_trained_without_the_test_subjects(run):
    folds = pd.read_csv(run / "results/folds.tsv", sep="\t", dtype=str)
    checked = 0
    for path in (run / "results/features").glob("*/fold*.h5"):
        with h5py.File(path) as f:
            fold = int(f.attrs["fold"])
            assert path.stem == f"fold{fold}"
            tested = folds[folds["fold"] == str(fold)]
            trained_on = set(json.loads(f.attrs["train_subjects"]))
            assert trained_on and not trained_on & set(tested["subject"]), path
            info = json.loads((run / f.attrs["model_info"]).read_text())
            seen = set(info["train_videos"]) | set(info["validation_videos"])
            assert seen and not seen & set(tested["video_id"]), path
            assert f.attrs["weights_sha256"] == hashlib.sha256(
                (run / f"results/models/{path.parent.name}/{path.stem}.pt").read_bytes()).hexdigest()
            checked += 1
    assert checked == 4 * 2  # three fine-tuned streams and a two-input network, two folds
    for name in ("landmarks", "handcrafted"):  # not trained: one extraction for every fold
        with h5py.File(run / f"results/features/{name}/all.h5") as f:
            assert f.attrs["fold"] == "all" and json.loads(f.attrs["train_subjects"]) == []


def test_every_rule_writes_a_log_and_a_benchmark(run):
    for rule in ("faces", "segments", "flow", "dynamic_rgb", "folds", "train", "extract",
                 "evaluate", "preview", "summary"):
        assert list((run / "logs" / rule).rglob("*.log")), rule
        assert list((run / "benchmarks" / rule).rglob("*.tsv")), rule


def test_second_run_has_nothing_to_do(run):
    result = snakemake(run, "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changing_a_flow_parameter_reruns_flow_and_downstream_only(run):
    changed = json.loads(json.dumps(CONFIG))
    changed["flow"]["farneback"] = {"winsize": 11}
    write_config(run, changed)
    try:
        result = snakemake(run, "-n")
        jobs = planned(result.stdout)
        assert jobs["flow"] == 2 and jobs["train"] == 4 and jobs["extract"] == 4
        assert jobs["evaluate"] == 3  # temporal, fused and rgb_flow; spatial does not use flow
        assert "preview" in jobs  # it shows flows
        assert "faces" not in jobs and "segments" not in jobs and "dynamic" not in jobs
    finally:
        write_config(run, CONFIG)
    assert "Nothing to be done" in snakemake(run, "-n").stdout


def test_switching_flow_methods_back_and_forth_finds_the_cache(run):
    horn = json.loads(json.dumps(CONFIG))
    horn["flow"]["method"] = "horn_schunck"
    write_config(run, horn)
    try:
        assert planned(snakemake(run, "-n").stdout)["flow"] == 2
        result = snakemake(run, "--until", "flow")
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(list((run / "results/flow").glob("horn_schunck-*/s000*.h5"))) == 2
    finally:
        write_config(run, CONFIG)
    back = planned(snakemake(run, "-n").stdout)  # farneback again: its flows are still there
    assert "flow" not in back and "faces" not in back
    write_config(run, horn)
    try:
        assert "flow" not in planned(snakemake(run, "-n").stdout)
    finally:
        write_config(run, CONFIG)


def test_rerunning_the_evaluation_gives_identical_metrics(run):
    before = {p: p.read_bytes() for p in (run / "results/experiments").glob("*/metrics.json")}
    result = snakemake(run, "--forcerun", "evaluate", "--until", "evaluate")
    assert result.returncode == 0, result.stderr[-3000:]
    after = {p: p.read_bytes() for p in before}
    assert len(before) == 4 and before == after


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_shows_the_summary_table_and_a_confusion_matrix(run, tmp_path):
    result = snakemake(run, "--report", "results/report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (run / "results/report.html").read_text()
    assert "vfer-summary-table" in html and "Confusion matrices" in html
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium where it can)")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1100",
             "--virtual-time-budget=15000"]
    url = (run / "results/report.html").as_uri()
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True,
                         timeout=120).stdout
    # Rendered by the report's JavaScript (in the file itself these are inside a JSON string).
    assert 'id="vfer-summary-table"' in dom and 'id="vfer-confusion"' in dom
    assert dom.count("<tr>") >= 1 + 3  # header + the three experiments
    shot = tmp_path / "report.png"
    subprocess.run(flags + [f"--screenshot={shot}", url], capture_output=True, timeout=120)
    import cv2

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (1100, 1400)
    assert image.std() > 20  # not a blank page


def test_jobs_that_use_cuda_where_present_declare_a_gpu(run):
    """Networks and flows computed by torch (backend auto or torch) declare gpu=1, so that a
    profile's gpu=1 runs one of them at a time; with device: cpu none does."""
    horn = json.loads(json.dumps(CONFIG))
    horn["flow"]["variants"] = {"hs": {"method": "horn_schunck"}}
    horn["streams"]["temporal_hs"] = {"input": "flow", "flow": "hs", **STREAM}
    horn["experiments"].append({"name": "temporal_hs", "streams": ["temporal_hs"]})
    gpu = {}
    try:
        for device in ("auto", "cpu"):
            write_config(run, {**horn, "device": device})
            result = snakemake(run, "-n", "--forceall", "--until", "extract")
            assert result.returncode == 0, result.stderr[-3000:]
            gpu[device] = {}
            for rule, wildcards, n in declared_gpus(result.stdout):
                if rule in ("flow", "train", "extract"):
                    key = dict(w.split("=") for w in wildcards.split(", "))
                    name = key.get("model") or key["flow_key"].split("-")[0]
                    gpu[device].setdefault((rule, name), set()).add(n)
    finally:
        write_config(run, CONFIG)
    networks = {"spatial", "temporal", "temporal_hs", "dynamic", "rgb_flow"}
    assert gpu["auto"] == {("flow", "farneback"): {0}, ("flow", "horn_schunck"): {1},
                           **{("train", m): {1} for m in networks},
                           **{("extract", m): {1} for m in networks},
                           ("extract", "landmarks"): {0}, ("extract", "handcrafted"): {0}}
    assert set(gpu["cpu"]) == set(gpu["auto"]) and all(v == {0} for v in gpu["cpu"].values())


def test_a_configfile_replaces_the_default_config(run, tmp_path):
    """An edited copy of config/config.yaml: its one-input network gets no input back from the
    config it was copied from (Snakemake would merge the two)."""
    mine = json.loads(json.dumps(CONFIG))
    mine["networks"]["rgb_flow"]["inputs"].pop("flow")
    mine["experiments"] = [{"name": "rgb", "streams": ["rgb_flow"],
                            "classifier": {"kind": "softmax"}}]
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(mine))
    result = snakemake(run, "-n", "--forceall", "--configfile", str(tmp_path / "mine.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = planned(result.stdout)
    assert jobs["train"] == 2 and "flow" not in jobs


def test_forcing_flow_reruns_flow_and_downstream_only(run):
    jobs = planned(snakemake(run, "-n", "-R", "flow").stdout)
    assert jobs == {"flow": 2, "train": 4, "extract": 4, "evaluate": 3, "preview": 2,
                    "summary": 1, "all": 1}  # temporal's and rgb_flow's models, not spatial's


def test_until_stops_at_the_features(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    jobs = planned(snakemake(copy, "-n", "-R", "faces", "--until", "extract").stdout)
    assert jobs == {"faces": 2, "segments": 2, "flow": 2, "dynamic_rgb": 2, "train": 8,
                    "extract": 10}
    before = {p: p.stat().st_mtime_ns for p in (copy / "results/experiments").rglob("*.*")}
    changed = json.loads(json.dumps(CONFIG))
    changed["flow"]["farneback"] = {"winsize": 11}
    write_config(copy, changed)
    result = snakemake(copy, "--until", "extract")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in before} == before  # evaluation not touched
    jobs = planned(snakemake(copy, "-n").stdout)  # the next run evaluates the new features
    assert jobs["evaluate"] == 3 and not {"flow", "train", "extract"} & set(jobs)


def test_identical_regenerated_features_do_not_rerun_the_evaluation(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    features = {p: p.read_bytes() for p in (copy / "results/features").rglob("*.h5")}
    result = snakemake(copy, "-R", "extract", "--until", "extract")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p: p.read_bytes() for p in features} == features  # no timings in outputs
    assert planned(snakemake(copy, "-n").stdout) == {}  # Nothing to be done


def test_omit_from_runs_everything_before_the_evaluation(run):
    jobs = planned(snakemake(run, "-n", "-R", "faces", "--omit-from", "evaluate").stdout)
    assert jobs == {"faces": 2, "segments": 2, "flow": 2, "dynamic_rgb": 2, "train": 8,
                    "extract": 10, "preview": 2}


def test_a_misspelled_key_stops_the_dry_run_naming_the_key(run, tmp_path):
    copy = tmp_path / "run"
    (copy / "config").mkdir(parents=True)
    wrong = json.loads(json.dumps(CONFIG))
    wrong["streams"]["spatial"]["finetun"] = "none"
    write_config(copy, wrong)
    (copy / "data").symlink_to(run / "data")
    result = snakemake(copy, "-n")
    assert result.returncode != 0
    assert "unknown key 'streams.spatial.finetun' (did you mean 'finetune'?)" in \
        result.stdout + result.stderr
    assert not (copy / "results").exists() and not (copy / "logs").exists()


def test_the_summary_compares_two_flow_methods_and_a_network(run, tmp_path):
    two = json.loads(json.dumps(CONFIG))
    two["flow"]["variants"] = {"hs": {"method": "horn_schunck"}}
    two["streams"]["temporal_hs"] = {**two["streams"]["temporal"], "flow": "hs"}
    two["experiments"] = [{"name": "temporal", "streams": ["temporal"]},
                          {"name": "temporal_hs", "streams": ["temporal_hs"]},
                          {"name": "rgb_flow", "streams": ["rgb_flow"],
                           "classifier": {"kind": "softmax"}}]
    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    write_config(copy, two)
    jobs = planned(snakemake(copy, "-n").stdout)
    assert jobs["train"] == 2 and jobs["extract"] == 2  # only the new stream (its flow may be
    # cached from test_switching_flow_methods_back_and_forth_finds_the_cache)
    result = snakemake(copy)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(copy / "results/summary.csv")
    assert list(table["experiment"]) == ["temporal", "temporal_hs", "rgb_flow"]
    methods = {p.name.split("-")[0] for p in (copy / "results/flow").iterdir()}
    assert methods == {"farneback", "horn_schunck"}
