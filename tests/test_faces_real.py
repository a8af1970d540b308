"""The face stage on real clips ($VFER_REAL_DATA; README.md, Layout)."""

import numpy as np
import pandas as pd
import pytest
import h5py

from tests.conftest import stage_defaults
from vfer import faces
from vfer.video import variable_rate_note

pytestmark = pytest.mark.realdata


def track(path):
    params = stage_defaults("faces")
    detector = faces.make_detector(params)
    try:
        return faces.track_video(str(path), detector, params)
    finally:
        detector.close()


def assert_no_crop_from_a_faceless_frame(t):
    assert t.detected[t.source].all()
    missing = ~t.detected
    np.testing.assert_array_equal(t.crops[missing], t.crops[t.source[missing]])


def test_single_face_has_a_face_in_almost_every_frame(real_data):
    t = track(real_data / "unlabeled/single_face.mp4")
    assert t.attrs["decoded_frames"] == 72
    assert t.detected.mean() >= 0.95


def test_no_face_video_fails_alone_and_its_shard_completes(real_data, tmp_path):
    videos = [("single", str(real_data / "unlabeled/single_face.mp4")),
              ("noface", str(real_data / "unlabeled/no_face.mp4")),
              ("posed", str(real_data / "unlabeled/posed_b.avi"))]
    out, fail, sheet = tmp_path / "s.h5", tmp_path / "s.tsv", tmp_path / "s.png"
    faces.process_shard(videos, str(out), str(fail), str(sheet), stage_defaults("faces"), {})
    failures = pd.read_csv(fail, sep="\t")
    assert failures["video_id"].tolist() == ["noface"]
    # 95 decoded frames although the container declares 98.
    assert failures["reason"][0] == f"no face in 95 decoded frames: {videos[1][1]}"
    with h5py.File(out) as f:
        assert sorted(f) == ["posed", "single"]
        assert f["posed"].attrs["decoded_frames"] == 71
    assert sheet.stat().st_size > 1000


def test_face_then_no_face(real_data):
    t = track(real_data / "unlabeled/face_noface.mov")
    assert t.detected[:60].all() and not t.detected[100:].any()
    # A phone clip of 30 and 24 fps stretches: its frames are not equally spaced in time.
    shortest, median, longest = t.attrs["frame_intervals_ms"]
    assert shortest < 20 and longest >= 41.6 and 33 < median < 42
    assert variable_rate_note(t.attrs["frame_intervals_ms"]).startswith(
        f"variable frame rate (frames {shortest:.1f}-{longest:.1f} ms apart)")
    assert_no_crop_from_a_faceless_frame(t)
    assert np.isnan(t.boxes[~t.detected]).all() and (t.scores[~t.detected] == 0).all()


def test_no_face_then_face(real_data):
    t = track(real_data / "unlabeled/noface_face.mov")
    assert not t.detected[:80].any() and t.detected[110:160].all()
    assert_no_crop_from_a_faceless_frame(t)


def test_segments_of_a_face_that_leaves_or_appears_hold_the_face(real_data, tmp_path):
    from vfer import segments
    from vfer.store import FacesFile, SegmentsFile

    videos = [("gone", str(real_data / "unlabeled/face_noface.mov")),
              ("late", str(real_data / "unlabeled/noface_face.mov"))]
    shard = tmp_path / "faces.h5"
    faces.process_shard(videos, str(shard), str(tmp_path / "f.tsv"), str(tmp_path / "f.png"),
                        stage_defaults("faces"), {})
    segments.process_shard(str(shard), str(tmp_path / "seg.h5"), stage_defaults("segments"), {})
    with FacesFile(shard) as f, SegmentsFile(tmp_path / "seg.h5") as s:
        for vid, _ in videos:
            index, detected = s.segment_index(vid), f.detected(vid).astype(bool)
            every = segments.segment_indices(f.n_frames(vid))
            assert 0 < len(index) < len(every)  # 169 frames: 10 windows, some without a face
            assert (detected[index].mean(1) >= 0.5).all()


@pytest.mark.parametrize("name, frames", [("cremad/1001_DFA_ANG_XX.flv", 67),
                                          ("unlabeled/posed_frown_a.avi", 67),
                                          ("unlabeled/WolfgangLanger_Pexels.mp4", 472)])
def test_containers_decode_and_track(real_data, name, frames):
    t = track(real_data / name)
    assert t.attrs["decoded_frames"] == frames
    assert t.detected.mean() >= 0.95
    assert variable_rate_note(t.attrs["frame_intervals_ms"]) == ""  # constant frame rates
