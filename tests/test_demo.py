import numpy as np

from vfer import demo


def face():
    """The neutral face (mouth closed) that expressions start from."""
    photo = demo.load_photo()
    f = demo.to_face(photo, photo.landmarks)
    return f + demo.neutralise(f)


def test_action_units_move_the_right_landmarks_the_right_way():
    f = face()
    corners = [61, 291]
    happy = demo.expression("happiness", f)
    assert (happy[corners, 1] < -0.05).all()  # lip corners up
    assert happy[61, 0] < 0 < happy[291, 0]  # and outwards
    sad = demo.expression("sadness", f)
    assert (sad[corners, 1] > 0.05).all()  # corners down
    brows = demo.BROWS
    inner = [b for b in brows if abs(f[b, 0]) < 0.3]
    assert (sad[inner, 1] < -0.05).all()  # inner brows raised (AU1)
    surprise = demo.expression("surprise", f)
    assert surprise[14, 1] > 0.2  # lower inner lip: jaw drop
    assert abs(surprise[13, 1]) < 1e-9  # upper inner lip stays
    assert (surprise[brows, 1] < 0).all()
    anger = demo.expression("anger", f)
    assert (anger[inner, 1] > 0.03).all()  # brows lowered (AU4)


def test_neutral_face_has_a_closed_mouth():
    photo = demo.load_photo()
    f = demo.to_face(photo, photo.landmarks)
    neutral = f + demo.neutralise(f)
    assert f[14, 1] - f[13, 1] > 0.1  # the photo smiles with an open mouth
    np.testing.assert_allclose(neutral[demo.LIPS_LOWER_INNER], neutral[demo.LIPS_UPPER_INNER], atol=1e-9)


def test_clips_are_deterministic_and_subjects_differ():
    s1 = demo.make_subject(0, 0)
    a = demo.render_clip(s1, "happiness", np.random.default_rng([0, 0, 1]))
    b = demo.render_clip(s1, "happiness", np.random.default_rng([0, 0, 1]))
    np.testing.assert_array_equal(a, b)
    assert a.shape[1:] == (240, 320, 3) and a.dtype == np.uint8
    s2 = demo.make_subject(0, 1)
    c = demo.render_clip(s2, "happiness", np.random.default_rng([0, 0, 1]))
    n = min(len(a), len(c))
    assert np.abs(a[:n].astype(int) - c[:n].astype(int)).mean() > 20  # other person, other room


def test_expression_profile_goes_from_neutral_to_apex_and_back():
    s = demo.expression_profile(np.random.default_rng(3))
    assert s[0] == 0.0 and s[-1] == 0.0 and s.max() == 1.0
    apex = np.flatnonzero(s == 1.0)
    assert np.all(np.diff(s[: apex[0] + 1]) >= 0) and np.all(np.diff(s[apex[-1]:]) <= 0)


def test_generated_dataset_is_written_as_a_table_of_real_videos(tmp_path):
    from vfer.video import read_video

    table = demo.generate(tmp_path, seed=1, subjects=2, clips=1, classes=("anger", "surprise"),
                          processes=1)
    lines = table.read_text().splitlines()
    assert lines[0] == "video_id\tpath\tlabel\tsubject"
    assert len(lines) == 1 + 4
    vid, path, label, subject = lines[1].split("\t")
    frames, info = read_video(tmp_path / path)
    assert (label, subject) == ("anger", "S01")
    assert frames.shape[1:] == (240, 320, 3) and info.fps == 25.0


def test_mediapipe_finds_the_face_in_generated_frames():
    """A sample of 10 clips (every subject, every class) checked frame by frame by BlazeFace."""
    import mediapipe as mp

    frames = []
    for index in range(10):
        subject = demo.make_subject(0, index)
        label = demo.BASIC_CLASSES[index % 6]
        frames.extend(demo.render_clip(subject, label, np.random.default_rng([0, index, 7])))
    with mp.solutions.face_detection.FaceDetection(model_selection=0,
                                                   min_detection_confidence=0.5) as detector:
        found = [bool(detector.process(np.ascontiguousarray(f)).detections) for f in frames]
    assert len(frames) > 300
    assert np.mean(found) >= 0.99
