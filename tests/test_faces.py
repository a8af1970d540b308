import cv2
import numpy as np
import pytest

from vfer import faces
from vfer.faces import FaceError


def test_alignment_levels_rotated_eyes_and_places_them():
    # Eyes 40 px apart on a line tilted by 15 degrees.
    a = np.deg2rad(15.0)
    left = np.array([100.0, 120.0])
    right = left + 40.0 * np.array([np.cos(a), np.sin(a)])
    m = faces.alignment_matrix(np.stack([left, right]), (150, 110), (3.0, 2.0), 1 / 3)
    mapped = np.array([m @ np.append(p, 1.0) for p in (left, right)])
    assert mapped[0, 1] == pytest.approx(mapped[1, 1], abs=1e-9)  # level
    assert mapped[:, 1].mean() == pytest.approx(50.0)  # eye row 1/3 of 150
    assert mapped[:, 0].tolist() == pytest.approx([27.5, 82.5])  # 2 IOD span the 110 px width


def test_align_crop_of_a_synthetic_face_is_level():
    img = np.full((200, 200, 3), 200, np.uint8)
    eyes = np.array([[80.0, 90.0], [120.0, 100.0]])
    for x, y in eyes:
        cv2.circle(img, (int(x), int(y)), 4, (0, 0, 0), -1)
    crop = faces.align_crop(img, eyes, (96, 64), (3.0, 2.0), 1 / 3)
    dark = np.argwhere(crop[..., 0] < 60)
    left, right = dark[dark[:, 1] < 32], dark[dark[:, 1] >= 32]
    assert abs(left[:, 0].mean() - right[:, 0].mean()) < 0.5
    assert abs(left[:, 0].mean() - 32) < 1.0


def test_fill_gaps_and_nearest_present():
    present = np.array([False, True, False, False, True, False])
    values = np.array([0.0, 10.0, 0.0, 0.0, 40.0, 0.0])
    assert faces.fill_gaps(values, present).tolist() == [10.0, 10.0, 20.0, 30.0, 40.0, 40.0]
    assert faces.nearest_present(present).tolist() == [1, 1, 1, 4, 4, 4]
    assert faces.nearest_present(np.array([False, True, False])).tolist() == [1, 1, 1]


def test_demo_clip_is_tracked_in_every_frame(demo_clip):
    path, frames = demo_clip
    detector = faces.MediaPipeDetector()
    try:
        track = faces.track_video(str(path), detector, (112, 112), (3.0, 2.0), 1 / 3, 1.0)
    finally:
        detector.close()
    assert track.attrs["decoded_frames"] == len(frames)
    assert track.detected.mean() >= 0.99
    assert track.crops.shape == (len(frames), 112, 112, 3)
    assert np.isfinite(track.landmarks).all()
    # Aligned: the eyes sit at a third of the crop height in every frame.
    m = [faces.alignment_matrix(e, (112, 112), (3.0, 2.0), 1 / 3) for e in track.eyes]
    rows = [(mm @ np.append(e[0], 1.0))[1] for mm, e in zip(m, track.eyes)]
    np.testing.assert_allclose(rows, 112 / 3, atol=1e-6)


def test_video_without_a_face_fails_with_its_reason(tmp_path):
    from vfer.demo import write_video

    frames = np.zeros((12, 120, 160, 3), np.uint8)
    frames[:, :, :, 1] = np.linspace(0, 255, 160, dtype=np.uint8)[None, None, :]
    path = tmp_path / "plain.avi"
    write_video(path, frames)
    detector = faces.MediaPipeDetector()
    try:
        with pytest.raises(FaceError, match=f"no face in 12 decoded frames: {path}"):
            faces.track_video(str(path), detector, (64, 64), (3.0, 2.0), 1 / 3, 1.0)
    finally:
        detector.close()
