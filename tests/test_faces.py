import cv2
import numpy as np
import pytest

from tests.conftest import stage_defaults
from vfer import faces
from vfer.faces import FaceError


def track(path, **overrides):
    params = stage_defaults("faces", **overrides)
    detector = faces.make_detector(params)
    try:
        return faces.track_video(str(path), detector, params)
    finally:
        detector.close()


def eye_angle_deg(rgb: np.ndarray) -> float:
    """Angle of the iris line found by FaceMesh in an image (0 = level)."""
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        lm = mesh.process(np.ascontiguousarray(rgb)).multi_face_landmarks[0].landmark
    h, w = rgb.shape[:2]
    left, right = lm[faces.RIGHT_IRIS], lm[faces.LEFT_IRIS]
    return float(np.degrees(np.arctan2((right.y - left.y) * h, (right.x - left.x) * w)))


def test_alignment_levels_rotated_eyes_and_places_them():
    a = np.deg2rad(15.0)
    left = np.array([100.0, 120.0])
    right = left + 40.0 * np.array([np.cos(a), np.sin(a)])
    m = faces.alignment_matrix(np.stack([left, right]), (150, 110), (3.0, 2.0), 1 / 3)
    mapped = np.array([m @ np.append(p, 1.0) for p in (left, right)])
    assert mapped[0, 1] == pytest.approx(mapped[1, 1], abs=1e-9)  # level
    assert mapped[:, 1].mean() == pytest.approx(50.0)  # eye row 1/3 of 150
    assert mapped[:, 0].tolist() == pytest.approx([27.5, 82.5])  # 2 IOD span the 110 px width


def test_keep_and_pad_scale_both_axes_alike():
    left, right = np.array([100.0, 120.0]), np.array([140.0, 120.0])  # 40 px apart, level
    m = faces.alignment_matrix(np.stack([left, right]), (150, 110), (3.0, 2.0), 1 / 3, "keep")
    assert abs(m[0, 0]) == pytest.approx(abs(m[1, 1]))  # one scale: no distortion
    mapped = np.array([m @ np.append(p, 1.0) for p in (left, right)])
    # 3 IOD fill the 150 px height (1.25 px per frame px), so 2 IOD span 100 of the 110 px
    assert mapped[:, 0].tolist() == pytest.approx([30.0, 80.0])
    assert mapped[:, 1].tolist() == pytest.approx([50.0, 50.0])
    mask = faces.pad_mask((64, 64), (64.0, 64 * 2 / 3), (32.0, 32.0))  # 3 x 2 IOD in 64 x 64
    assert mask[:, :10].all() and mask[:, 54:].all() and not mask[:, 11:53].any()


def test_pad_zeroes_what_lies_outside_the_face_region(demo_clip):
    """Paper 003's square crops: the 3 x 2 IOD region scaled to 64 px high, zeros beside it."""
    t = track(demo_clip[0], fit="pad", size=[64, 64], crop_iod=[3.0, 2.0])
    assert t.detected.mean() >= 0.9
    crops = t.crops.astype(int)
    outside = faces.pad_mask((64, 64), (64.0, 64 * 2 / 3), (64 / 3 + (0.5 - 1 / 3) * 64, 32.0))
    assert outside[:, :10].all() and not outside[:, 12:52].any()
    assert (crops[:, outside] == 0).all() and crops[:, ~outside].mean() > 30
    keep = track(demo_clip[0], fit="keep", size=[64, 64], crop_iod=[3.0, 2.0]).crops.astype(int)
    assert (keep[:, outside] > 0).mean() > 0.9  # keep shows the frame where pad has zeros


def test_box_matrix_adds_the_margin_and_keeps_the_aspect():
    m = faces.box_matrix(np.array([10.0, 20.0, 60.0, 120.0]), (64, 64), 0.1)
    # 50 x 100 box + 10% per side = 60 x 120, widened to square 120 x 120 around (35, 70).
    corners = np.array([m @ [x, y, 1.0] for x, y in [(-25, 10), (95, 130)]])
    np.testing.assert_allclose(corners, [[0, 0], [64, 64]], atol=1e-9)


def test_fill_gaps_nearest_and_short_runs():
    present = np.array([False, True, False, False, True, False])
    values = np.array([0.0, 10.0, 0.0, 0.0, 40.0, 0.0])
    assert faces.fill_gaps(values, present).tolist() == [10.0, 10.0, 20.0, 30.0, 40.0, 40.0]
    assert faces.nearest_present(present).tolist() == [1, 1, 1, 4, 4, 4]
    assert faces.nearest_present(np.array([False, True, False])).tolist() == [1, 1, 1]
    runs = np.array([1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 1, 1, 1], bool)
    assert faces.drop_short_runs(runs, 3).astype(int).tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1]
    assert faces.drop_short_runs(np.array([1, 1], bool), 3).tolist() == [True, True]


def test_demo_clip_is_tracked_and_aligned_in_every_frame(demo_clip):
    path, frames = demo_clip
    t = track(path)
    assert t.attrs["decoded_frames"] == len(frames) and t.attrs["source"] == "video"
    assert t.detected.mean() >= 0.99
    assert t.crops.shape == (len(frames), 112, 112, 3)
    assert np.isfinite(t.landmarks).all() and np.isfinite(t.boxes).all()
    rows = [(faces.alignment_matrix(e, (112, 112), (3.0, 2.0), 1 / 3) @ np.append(e[0], 1.0))[1]
            for e in t.eyes]
    np.testing.assert_allclose(rows, 112 / 3, atol=1e-6)


def test_face_rotated_by_15_degrees_comes_out_level(demo_clip, tmp_path):
    from vfer.demo import write_video

    _, frames = demo_clip
    big = np.stack([cv2.resize(f, (640, 480), interpolation=cv2.INTER_CUBIC) for f in frames[:8]])
    # Rotate so that the eye line of the first frame is tilted by exactly 15 degrees.
    m = cv2.getRotationMatrix2D((320, 220), eye_angle_deg(big[0]) + 15.0, 1.0)
    rotated = np.stack([cv2.warpAffine(f, m, (640, 480), borderMode=cv2.BORDER_REFLECT) for f in big])
    assert eye_angle_deg(rotated[0]) == pytest.approx(-15.0, abs=1.0)
    path = tmp_path / "rotated.avi"
    write_video(path, rotated)
    t = track(path, size=[150, 100])  # 3 x 2 inter-ocular distances: isotropic pixels
    assert t.detected.all()
    for crop in t.crops[::3]:
        up = cv2.resize(crop, (300, 450), interpolation=cv2.INTER_CUBIC)
        assert abs(eye_angle_deg(up)) < 2.0


def test_image_sequence_folder_is_read_in_natural_order(demo_clip, tmp_path):
    _, frames = demo_clip
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, f in enumerate(frames[:12]):  # frame_2 must come before frame_10
        cv2.imwrite(str(folder / f"frame_{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    t = track(folder, sequence_fps=25)
    assert t.attrs["source"] == "images" and t.attrs["decoded_frames"] == 12
    assert t.detected.all()
    # Same frames through the video path (MJPG-compressed) give nearly the same crops.
    from vfer.demo import write_video
    write_video(tmp_path / "same.avi", frames[:12])
    v = track(tmp_path / "same.avi")
    assert np.abs(t.crops.astype(int) - v.crops.astype(int)).mean() < 6


def test_a_16_bit_sequence_keeps_one_scale_for_all_its_frames(tmp_path):
    from vfer.video import FrameSource

    image = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (8, 1))  # 12-bit values
    for k, peak in enumerate((4095, 2048, 1200)):  # one bright pixel differs per frame
        frame = image.copy()
        frame[0, 0] = peak
        cv2.imwrite(str(tmp_path / f"f{k}.png"), frame)
    frames = [f[..., 0] for f in FrameSource(tmp_path)]
    assert frames[0][1:].tolist() == frames[1][1:].tolist() == frames[2][1:].tolist()
    assert frames[0][1, -1] == round(3960 * 255 / 4095)  # the 12-bit range to 0..255


def test_precropped_48px_grayscale_frames_are_upsampled(tmp_path):
    folder = tmp_path / "crops"
    folder.mkdir()
    rng = np.random.default_rng(0)
    grays = [cv2.GaussianBlur(rng.integers(0, 255, (48, 48)).astype(np.uint8), (5, 5), 2)
             for _ in range(5)]
    for i, g in enumerate(grays):
        cv2.imwrite(str(folder / f"{i:03d}.png"), g)  # single-channel files
    t = track(folder, detector="none", landmarks=False, size=[112, 112])
    assert t.detected.all() and t.attrs["align"] == "resize"
    for crop, g in zip(t.crops, grays):
        expected = cv2.resize(cv2.cvtColor(g, cv2.COLOR_GRAY2RGB), (112, 112),
                              interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(crop, expected)


def test_precropped_faces_are_aligned_when_landmarks_are_found(demo_clip, tmp_path):
    _, frames = demo_clip
    t0 = track(demo_clip[0], size=[96, 96])
    folder = tmp_path / "facecrops"
    folder.mkdir()
    for i, c in enumerate(t0.crops[:6]):
        gray = cv2.cvtColor(cv2.resize(c, (48, 48), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        cv2.imwrite(str(folder / f"{i}.png"), gray)
    t = track(folder, detector="none", size=[112, 112])
    assert t.attrs["align"] == "eyes" and np.isfinite(t.landmarks).all()
    assert t.crops.shape == (6, 112, 112, 3)
    assert (t.crops[..., 0] == t.crops[..., 1]).all()  # grayscale became 3 equal channels


def test_target_fps_resamples_to_the_nearest_frames(demo_clip):
    from vfer.video import resample

    assert [i for i, _ in resample(iter(range(12)), 30.0, 10.0)] == [0, 3, 6, 9]
    assert [i for i, _ in resample(iter(range(9)), 25.0, 10.0)] == [0, 3, 5, 8]
    assert [i for i, _ in resample(iter(range(5)), 25.0, 50.0)] == [0, 1, 2, 3, 4]
    path, frames = demo_clip
    t = track(path, target_fps=10.0)
    assert t.attrs["stored_fps"] == 10.0 and t.attrs["decoded_frames"] == len(frames)
    assert t.frame_index.tolist() == [i for i, _ in resample(iter(range(len(frames))), 25.0, 10.0)]


def test_large_frames_are_detected_downscaled_and_cropped_at_full_size(demo_clip, tmp_path):
    from vfer.demo import write_video

    _, frames = demo_clip
    big = np.stack([cv2.resize(f, (1280, 960), interpolation=cv2.INTER_CUBIC) for f in frames[:6]])
    write_video(tmp_path / "big.avi", big)
    small = track(tmp_path / "big.avi", detect_max_side=320)
    full = track(tmp_path / "big.avi", detect_max_side=0)
    assert small.detected.all()
    np.testing.assert_allclose(small.eyes, full.eyes, atol=6.0)  # pixels of the 1280 frame
    assert small.attrs["width"] == 1280


def test_haar_detector_finds_the_demo_face(demo_clip):
    t = track(demo_clip[0], detector="haar", landmarks=False)
    assert t.detected.mean() >= 0.9
    assert np.isnan(t.landmarks).all()
    assert (t.eyes[:, 1, 0] > t.eyes[:, 0, 0]).all()


def test_video_without_a_face_fails_with_its_reason(tmp_path):
    from vfer.demo import write_video

    frames = np.zeros((12, 120, 160, 3), np.uint8)
    frames[:, :, :, 1] = np.linspace(0, 255, 160, dtype=np.uint8)[None, None, :]
    path = tmp_path / "plain.avi"
    write_video(path, frames)
    with pytest.raises(FaceError, match=f"no face in 12 decoded frames: {path}"):
        track(path, size=[64, 64])


def test_contact_sheet_marks_missing_frames():
    crops = np.full((8, 32, 32, 3), 128, np.uint8)
    detected = np.array([True] * 4 + [False] * 4)
    sheet = faces.contact_sheet([("v1", crops, detected), ("v2", "no face in 9 decoded frames: x")],
                                tile=32)
    assert sheet.shape == (2 * (32 + 16), 8 * 32, 3)
    assert tuple(sheet[16 + 1, 4 * 32 + 1]) == (220, 0, 0)  # border of a face-less tile
    assert tuple(sheet[16 + 1, 1]) == (128, 128, 128)  # a tile with a face is untouched
    assert (sheet[48 + 16:, :, 0] > sheet[48 + 16:, :, 1]).any()  # red reason text


@pytest.mark.parametrize("visibility", [False, True])
def test_mesh_points_are_the_landmarks_in_pixels_whatever_fields_they_hold(visibility):
    from mediapipe.framework.formats import landmark_pb2

    rng = np.random.default_rng(0)
    xyz = rng.normal(0.5, 0.4, (faces.N_LANDMARKS, 3)).astype(np.float32)
    xyz[:3] = [[0.0, 0.0, 0.0], [1.0, -0.0, -1.5], [1e-30, 3e4, -2.0]]
    landmarks = landmark_pb2.NormalizedLandmarkList()
    for x, y, z in xyz:
        landmarks.landmark.add(x=x, y=y, z=z)
    if visibility:  # one landmark with a fourth field: read field by field
        landmarks.landmark[7].visibility = 0.9
    w, h = 320, 240
    want = np.array([(p.x * w, p.y * h, p.z * w) for p in landmarks.landmark], np.float32)
    got = faces.mesh_points(landmarks, w, h)
    assert got.dtype == np.float32 and got.shape == (faces.N_LANDMARKS, 3)
    assert np.array_equal(got, want)
    assert np.allclose(got, xyz * [w, h, w])
