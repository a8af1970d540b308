"""A corpus of bad inputs, generated here, next to good videos in one run: each gets its
documented outcome (README, 'Bad input') and every good video completes."""

from __future__ import annotations

import re
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.tiny import snakemake, write_config
from vfer import demo
from vfer.video import read_video

pytestmark = pytest.mark.workflow
STREAM = {"backbone": "small_cnn", "size": 24, "finetune": "per_fold", "steps": 10,
          "batch_size": 16, "eval_every": 5}
CONFIG = {
    "samples": "data/samples.tsv", "classes": ["happiness", "surprise"], "shard_size": 6,
    "faces": {"size": [64, 64]}, "flow": {"bound": 2},
    "streams": {"temporal": {"input": "flow", **STREAM},
                "handcrafted": {"input": "frames", "backbone": "hog", "finetune": "none"}},
    "protocol": {"name": "losgo", "groups": 2},
    "experiments": [{"name": "temporal", "streams": ["temporal"]},
                    {"name": "handcrafted", "streams": ["handcrafted"]}],
}
# video_id -> the reason in results/failures.tsv (a regular expression)
FAILS = {
    "corrupt": r"cannot decode \(not a video, or an unsupported codec\): .*corrupt.avi",
    "empty": r"empty file: .*empty.avi",
    "textfile": r"cannot decode \(not a video, or an unsupported codec\): .*notes.mp4",
    "noface": r"no face in 12 decoded frames: .*noface.avi",
    "onepixel": r"no face in 5 decoded frames: .*onepixel.avi",
    "wide": r"no face in 5 decoded frames: .*wide.avi",
}
PROCESSED = ["oneframe", "threeframes", "grayscale", "unicode_path", "lonely", "truncated"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    work = tmp_path_factory.mktemp("bad")
    data = work / "data"
    table = demo.generate(data, seed=3, subjects=4, clips=1, classes=("happiness", "surprise"),
                          processes=2)
    rows = pd.read_csv(table, sep="\t", dtype=str)
    good = data / rows["path"][0]
    frames, _ = read_video(good)
    bad = data / "bad"
    bad.mkdir()
    raw = bytearray(good.read_bytes())
    corrupt = bytearray(raw)
    corrupt[:4096] = np.random.default_rng(7).integers(0, 256, 4096, np.uint8).tobytes()
    (bad / "corrupt.avi").write_bytes(corrupt)
    truncated = raw[: len(raw) // 3]  # the first third decodes
    (bad / "truncated.avi").write_bytes(truncated)
    (bad / "empty.avi").write_bytes(b"")
    (bad / "notes.mp4").write_text("not a video\n")
    demo.write_video(bad / "oneframe.avi", frames[:1])
    demo.write_video(bad / "threeframes.avi", frames[:3])
    demo.write_video(bad / "noface.avi", np.full((12, 120, 160, 3), 90, np.uint8))
    demo.write_video(bad / "onepixel.avi", np.full((5, 1, 1, 3), 90, np.uint8))
    demo.write_video(bad / "wide.avi", np.full((5, 10, 10000, 3), 90, np.uint8))
    writer = cv2.VideoWriter(str(bad / "grayscale.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25,
                             (frames.shape[2], frames.shape[1]), isColor=False)
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY))
    writer.release()
    odd = bad / "vidéos à voir" / "clip 1 (copy).avi"
    odd.parent.mkdir()
    shutil.copy(good, odd)
    shutil.copy(data / rows["path"][1], bad / "lonely.avi")
    extra = {"corrupt": "bad/corrupt.avi", "truncated": "bad/truncated.avi",
             "empty": "bad/empty.avi", "textfile": "bad/notes.mp4",
             "oneframe": "bad/oneframe.avi", "threeframes": "bad/threeframes.avi",
             "noface": "bad/noface.avi", "onepixel": "bad/onepixel.avi", "wide": "bad/wide.avi",
             "grayscale": "bad/grayscale.avi", "unicode_path": str(odd.relative_to(data)),
             "lonely": "bad/lonely.avi"}
    label = rows["label"][0]
    added = [{"video_id": k, "path": p, "label": label,
              "subject": "S99" if k == "lonely" else "S01"} for k, p in extra.items()]
    pd.concat([rows, pd.DataFrame(added)]).to_csv(table, sep="\t", index=False)
    write_config(work, CONFIG)
    result = snakemake(work)
    return work, result


def test_each_bad_video_fails_alone_with_its_reason(corpus):
    work, result = corpus
    assert result.returncode == 0, result.stderr[-4000:]
    failures = pd.read_csv(work / "results/failures.tsv", sep="\t", dtype=str)
    assert sorted(failures["video_id"]) == sorted(FAILS)
    for row in failures.itertuples():
        assert re.fullmatch(FAILS[row.video_id], row.reason), row.reason
        assert row.stage == "faces"
    assert "Failed videos (6" in (work / "results/summary.md").read_text()


def test_every_good_and_odd_video_completes(corpus):
    work, _ = corpus
    samples = pd.read_csv(work / "data/samples.tsv", sep="\t", dtype=str)
    expected = set(samples["video_id"]) - set(FAILS)
    for name in ("temporal", "handcrafted"):
        predictions = pd.read_csv(work / f"results/experiments/{name}/predictions.tsv", sep="\t")
        assert set(predictions["video_id"]) == expected
    assert set(PROCESSED) <= expected


@pytest.mark.parametrize("row, message", [
    ({"video_id": "ghost", "path": "videos/nowhere.avi", "label": "happiness", "subject": "S01"},
     r"line \d+ \(video_id 'ghost'\): file not found: .*nowhere.avi"),
    ({"video_id": "odd_label", "path": "bad/empty.avi", "label": "boredom", "subject": "S01"},
     r"line \d+ \(video_id 'odd_label'\): label 'boredom' is not one of the configured classes"),
    ({"video_id": "oneframe", "path": "bad/empty.avi", "label": "happiness", "subject": "S01"},
     r"line \d+ \(video_id 'oneframe'\): duplicate video_id, first seen on line \d+"),
])
def test_bad_rows_stop_the_run_before_any_job(corpus, tmp_path, row, message):
    work, _ = corpus
    table = pd.read_csv(work / "data/samples.tsv", sep="\t", dtype=str)
    broken = work / "data/broken.tsv"
    pd.concat([table, pd.DataFrame([row])]).to_csv(broken, sep="\t", index=False)
    result = snakemake(work, "-n", "--config", "samples=data/broken.tsv")
    assert result.returncode != 0
    assert re.search(message, result.stdout + result.stderr)
    assert "invalid samples table" in result.stdout + result.stderr
