import numpy as np
import pytest

from vfer.segments import segment_indices


def test_short_clip_is_padded_with_first_and_last_frames():
    seg = segment_indices(10, 16)
    # (16 - 10) / 2 = 3 copies of each end frame, plus the frames themselves.
    assert seg.tolist() == [[0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9]]


def test_odd_padding_remainder_goes_to_the_end():
    seg = segment_indices(9, 16)[0]
    assert (seg == 0).sum() == 1 + 3
    assert (seg == 8).sum() == 1 + 4


def test_long_clip_drops_leftover_frames_equally_at_both_ends():
    assert segment_indices(20, 16).tolist() == [list(range(2, 18))]
    seg = segment_indices(40, 16, stride=16)
    assert seg[:, 0].tolist() == [4, 20]
    assert np.all(np.diff(seg, axis=1) == 1)


def test_overlapping_windows():
    seg = segment_indices(32, 16, stride=8)
    assert seg[:, 0].tolist() == [0, 8, 16]


def test_exact_length_and_invalid_input():
    assert segment_indices(16).tolist() == [list(range(16))]
    with pytest.raises(ValueError):
        segment_indices(0)


def test_resample_mode_and_last_frame_padding():
    assert segment_indices(40, 16, mode="resample").tolist() == [
        [0, 3, 5, 8, 10, 13, 16, 18, 21, 23, 26, 29, 31, 34, 36, 39]]
    # a shorter clip keeps its frames and repeats the last one (paper 003), not duplicates
    assert segment_indices(12, 18, mode="resample").tolist() == [list(range(12)) + [11] * 6]
    assert segment_indices(4, 8, mode="resample").tolist() == [[0, 1, 2, 3, 3, 3, 3, 3]]
    assert segment_indices(10, 16, pad="last").tolist() == [list(range(10)) + [9] * 6]


def test_segments_without_a_face_are_left_out_but_a_video_keeps_one(tmp_path):
    from vfer import segments
    from vfer.store import FacesFile, SegmentsFile

    index = segment_indices(64, 16)  # frames 0-15, 16-31, 32-47, 48-63
    late = np.arange(64) >= 40  # the face appears at frame 40
    assert segments.with_faces(index, late, 0.5).tolist() == index[[2, 3]].tolist()
    assert segments.with_faces(index, late, 0.0).tolist() == index.tolist()
    brief = np.zeros(64, bool)
    brief[20:24] = True  # 4 frames of 16: below any useful share, the best segment is kept
    assert segments.with_faces(index, brief, 0.5).tolist() == index[[1]].tolist()

    n = 64
    with FacesFile.create(tmp_path / "faces.h5", {}) as f:
        for vid, detected in (("late", late), ("always", np.ones(n, bool))):
            f.write_video(vid, np.zeros((n, 8, 8, 3), np.uint8), np.zeros((n, 4), np.float32),
                          detected.astype(np.float32), np.zeros((n, 2, 2), np.float32),
                          np.zeros((n, 478, 3), np.float32), detected,
                          np.arange(n, dtype=np.int32), np.arange(n, dtype=np.int32), {})
    params = {"length": 16, "stride": 16, "mode": "windows", "pad": "both", "min_face": 0.5}
    segments.process_shard(str(tmp_path / "faces.h5"), str(tmp_path / "seg.h5"), params, {})
    with SegmentsFile(tmp_path / "seg.h5") as s:
        assert s.segment_index("late")[:, 0].tolist() == [32, 48]
        assert s.segment_index("always")[:, 0].tolist() == [0, 16, 32, 48]
