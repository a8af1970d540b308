"""The workflow on dataset layouts: a CK+ fixture (image sequences of face crops, detector
none) and the real CREMA-D clips ($VFER_REAL_DATA/cremad: one actor)."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import stage_defaults
from tests.test_manifest import ckplus_tree
from tests.tiny import snakemake, write_config
from vfer import demo, faces
from vfer.cli import main

pytestmark = pytest.mark.workflow
TINY_CNN = {"backbone": "small_cnn", "size": 32, "finetune": "per_fold", "steps": 10,
            "batch_size": 16, "eval_every": 5}


@pytest.fixture(scope="module")
def ckplus(tmp_path_factory):
    """4 subjects x (happiness, surprise): 48 x 48 grayscale face crops in CK+'s folders."""
    root = tmp_path_factory.mktemp("ckplus")
    params = stage_defaults("faces", size=[48, 48])
    detector = faces.make_detector(params)
    crops, codes = {}, {}
    try:
        for i in range(4):
            subject = demo.make_subject(7, i)
            for seq, (label, code) in enumerate((("happiness", 5), ("surprise", 7)), 1):
                frames = demo.render_clip(subject, label, np.random.default_rng([7, i, seq]))
                video = root / f"tmp_{i}_{seq}.avi"
                demo.write_video(video, frames)
                track = faces.track_video(str(video), detector, params)
                key = (f"S{100 + i:03d}", f"{seq:03d}")
                crops[key] = [cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) for c in track.crops]
                codes[key] = code
                video.unlink()
    finally:
        detector.close()
    ckplus_tree(root / "CK+", codes, crops=crops)
    return root


def test_ckplus_image_sequences_through_the_whole_workflow(ckplus):
    work = ckplus / "work"
    work.mkdir()
    assert main(["manifest", "--layout", "ckplus", str(ckplus / "CK+"), "-o",
                 str(work / "config/samples.tsv")]) == 0
    config = {
        "samples": "config/samples.tsv", "classes": ["happiness", "surprise"], "shard_size": 4,
        "faces": {"detector": "none", "size": [64, 64], "sequence_fps": 30},
        "flow": {"bound": 2},
        "streams": {"spatial": {"input": "frames", **TINY_CNN},
                    "handcrafted": {"input": "frames", "backbone": "hog", "finetune": "none"}},
        "protocol": {"name": "losgo", "groups": 2},
        "experiments": [{"name": "spatial", "streams": ["spatial"]},
                        {"name": "handcrafted", "streams": ["handcrafted"]}],
    }
    write_config(work, config)
    result = snakemake(work)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = (work / "results/summary.md").read_text()
    assert "| spatial |" in summary and "| handcrafted |" in summary
    with h5py.File(work / "results/faces/s0000.h5") as f:
        video = f["S100_001"]
        assert video.attrs["source"] == "images" and video.attrs["fps"] == 30
        assert video["frames"].shape[1:] == (64, 64, 3) and video["detected"][()].all()
        assert video.attrs["align"] in ("eyes", "resize")
    assert pd.read_csv(work / "results/failures.tsv", sep="\t").empty


@pytest.mark.realdata
@pytest.mark.parametrize("neutral", [False, True])
def test_cremad_real_clips(real_data, tmp_path, neutral):
    work = tmp_path
    # CREMA-D has no surprise: a configured class without videos is refused at validation
    classes = ["anger", "disgust", "fear", "happiness", "sadness"] + \
        (["neutral"] if neutral else [])
    assert main(["manifest", "--layout", "cremad", str(real_data / "cremad"), "-o",
                 str(work / "config/samples.tsv"), "--classes", *classes]) == 0
    table = pd.read_csv(work / "config/samples.tsv", sep="\t", dtype=str)
    assert len(table) == (6 if neutral else 5) and set(table["subject"]) == {"1001"}
    assert ("neutral" in set(table["label"])) == neutral
    config = {
        "samples": "config/samples.tsv", "classes": classes, "shard_size": 6,
        "streams": {"landmarks": {"input": "landmarks", "backbone": "landmarks", "finetune": "none"},
                    "handcrafted": {"input": "frames", "backbone": "hog", "finetune": "none"}},
        "experiments": [{"name": "both", "streams": ["landmarks", "handcrafted"]}],
    }
    write_config(work, config)
    # One actor cannot be evaluated subject-independently: the run says so ...
    dry = snakemake(work, "-n")
    assert dry.returncode != 0 and "1 subjects cannot form 5 subject groups" in dry.stdout + dry.stderr
    # ... but faces and features of every clip are computed.
    targets = ["results/features/landmarks/all.h5", "results/features/handcrafted/all.h5"]
    result = snakemake(work, *targets)
    assert result.returncode == 0, result.stderr[-4000:]
    for target in targets:
        with h5py.File(work / target) as f:
            assert sorted(f) == sorted(table["video_id"])
            assert all(f[v]["features"].shape[0] >= 3 for v in f)  # 56-70 frames: 3-4 segments
    with h5py.File(work / "results/faces/s0000.h5") as f:
        for v in f:
            assert f[v].attrs["detected_frames"] == f[v].attrs["decoded_frames"]
