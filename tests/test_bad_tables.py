"""Bad tables, configs, arguments and videos: each stops (or fails its video) with a message
naming the value, the file and the line, never a traceback or a silently wrong result."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from vfer.cli import main
from vfer.folds import assign_folds, read_folds
from vfer.samples import SamplesError, load_samples
from vfer.video import FrameSizeError, read_video

SCHEMA = Path(__file__).resolve().parents[1] / "workflow/schemas/samples.schema.yaml"
CLASSES = ["anger", "happiness"]
HEADER = "video_id\tpath\tlabel\tsubject"


def write_table(tmp_path: Path, text: str, name: str = "samples.tsv") -> Path:
    """A samples table holding ``text`` next to the files v/a.avi, v/b.avi, v/c.avi."""
    (tmp_path / "v").mkdir(exist_ok=True)
    for clip in ("a", "b", "c"):
        (tmp_path / "v" / f"{clip}.avi").write_bytes(b"x")
    table = tmp_path / name
    table.write_bytes(text.encode())
    return table


def fails(table: Path, message: str, classes=CLASSES) -> None:
    """Loading ``table`` stops with exactly ``message`` (``{table}`` stands for its path)."""
    with pytest.raises(SamplesError) as error:
        load_samples(table, classes, SCHEMA)
    assert str(error.value) == message.format(table=table, folder=table.parent)


# 1. ids that pandas would read as missing values or numbers stay exact, distinct strings

ODD_SUBJECTS = ["NA", "N/A", "null", "None", "nan", "007", "7", "1e3"]
ODD_IDS = ["NA", "null", "None", "nan", "007", "7", "1e3", "1.50"]  # no "/" in ids


def test_odd_ids_stay_exact_strings_through_samples_and_folds(tmp_path):
    rows = [f"{v}\tv/clip{i}.avi\t{CLASSES[i % 2]}\t{s}"
            for i, (v, s) in enumerate(zip(ODD_IDS, ODD_SUBJECTS))]
    samples = load_samples(write_table(tmp_path, "\n".join([HEADER] + rows) + "\n"), CLASSES,
                           SCHEMA, check_files=False)
    assert samples["video_id"].tolist() == ODD_IDS
    assert samples["subject"].tolist() == ODD_SUBJECTS
    folds_file = tmp_path / "folds.tsv"
    assign_folds(samples, "loso").to_csv(folds_file, sep="\t", index=False)  # as the folds rule
    folds = read_folds(str(folds_file))
    assert folds["video_id"].tolist() == ODD_IDS
    assert folds["subject"].tolist() == ODD_SUBJECTS
    assert folds["fold"].dtype.kind == "i"
    assert folds.groupby("subject")["fold"].nunique().eq(1).all()
    assert folds["fold"].nunique() == len(ODD_SUBJECTS)  # 8 distinct subjects, 8 folds


@pytest.mark.parametrize("row, message", [
    ("\tv/a.avi\tanger\tS1", "{table} line 2 (video_id ''): column 'video_id': '' does not match "
                             "'^[A-Za-z0-9][A-Za-z0-9_.+-]*$'"),
    ("a\tv/a.avi\tanger\t", "{table} line 2 (video_id 'a'): column 'subject': '' does not match "
                            "'^\\\\S+$'"),
])
def test_empty_ids_are_still_errors(tmp_path, row, message):
    fails(write_table(tmp_path, f"{HEADER}\n{row}\n"), message)


# 4. a configured class without videos

def test_configured_classes_without_videos_stop_validation(tmp_path):
    table = write_table(tmp_path, f"{HEADER}\na\tv/a.avi\tanger\tS1\nb\tv/b.avi\thappiness\tS2\n")
    fails(table, "config class 'fear' has no video in {table}; remove it from classes or add "
                 "its videos", classes=["anger", "fear", "happiness"])
    fails(table, "config classes 'fear', 'sadness' have no video in {table}; remove them from "
                 "classes or add their videos", classes=["anger", "fear", "happiness", "sadness"])


# 5. one video file under two rows; video ids that differ only in case

def test_one_file_under_two_subjects_names_both_rows(tmp_path):
    table = write_table(tmp_path, f"{HEADER}\na\tv/a.avi\tanger\tS1\nb\tv/c.avi\tanger\tS2\n"
                                  "c\tv/../v/a.avi\thappiness\tS3\n")
    fails(table, "{table} line 4 (video_id 'c'): same video file as line 2 (video_id 'a', "
                 "subject 'S1'): {folder}/v/a.avi; list each video once (under two subjects, "
                 "'S1' and 'S3', it would be trained on in the folds that test it)")


@pytest.mark.parametrize("link", [os.symlink, os.link])
def test_one_file_through_a_link_and_an_absolute_path(tmp_path, link):
    table = write_table(tmp_path, f"{HEADER}\na\t{tmp_path}/v/b.avi\tanger\tS1\n"
                                  "b\tv/a.avi\thappiness\tS1\nc\tlink.avi\thappiness\tS1\n")
    link(tmp_path / "v/b.avi", tmp_path / "link.avi")
    fails(table, "{table} line 4 (video_id 'c'): same video file as line 2 (video_id 'a', "
                 "subject 'S1'): {folder}/link.avi; list each video once")


def test_video_ids_differing_only_in_case(tmp_path):
    table = write_table(tmp_path, f"{HEADER}\nClip1\tv/a.avi\tanger\tS1\n"
                                  "clip2\tv/b.avi\thappiness\tS1\nclip1\tv/c.avi\tanger\tS2\n")
    fails(table, "{table} line 4 (video_id 'clip1'): video_id differs only in case from 'Clip1' "
                 "on line 2 (they collide on case-insensitive file systems and in HDF5 group "
                 "names); rename one")


# 9. paths that Snakemake would not take literally (it stops the DAG: UndefinedPathvarException,
# WildcardError; or reads another file: <results> becomes 'results')

@pytest.mark.parametrize("name, found", [
    ("<script>.avi", "'<script>', which Snakemake would read as a path variable"),
    ("clip<results>.avi", "'<results>', which Snakemake would read as a path variable"),
    ("clip{take}.avi", "'{{take}}', which Snakemake would read as a wildcard"),
])
def test_snakemake_placeholders_in_paths_are_refused(tmp_path, name, found):
    table = write_table(tmp_path, f"{HEADER}\na\tv/a.avi\tanger\tS1\nb\tv/{name}\thappiness\tS2\n")
    (tmp_path / "v" / name).write_bytes(b"x")
    fails(table, "{table} line 3 (video_id 'b'): column 'path': {folder}/v/" + name.replace(
        "{", "{{").replace("}", "}}") + f" holds {found}, not as part of the name; rename the "
        "file (or its folder) without '<...>' and '{{...}}'")


def test_a_table_whose_own_path_holds_a_placeholder(tmp_path):
    folder = tmp_path / "<data>"
    folder.mkdir()
    table = write_table(folder, f"{HEADER}\na\tv/a.avi\tanger\tS1\n")
    fails(table, "{table}: the table's path holds '<data>', which Snakemake would read as a "
                 "path variable, not as part of the name; rename or move it")


# 10. true line numbers (blank lines, quoted newlines, CRLF) and empty tables

@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_line_numbers_count_blank_lines_and_quoted_newlines(tmp_path, newline):
    lines = [HEADER + "\tnote", "", "a\tv/a.avi\tanger\tS1\t\"a note", "on two lines\"", "",
             "b\tv/b.avi\tangry\tS2\tshort"]
    table = write_table(tmp_path, newline.join(lines) + newline)
    fails(table, "{table} line 6 (video_id 'b'): label 'angry' is not one of the configured "
                 "classes ['anger', 'happiness']")


@pytest.mark.parametrize("text, message", [
    ("", "{table}: empty table: no header and no rows; write a header with the columns "
         "video_id, path, label, subject (and split), then one row per video"),
    ("\n\n", "{table}: empty table: no header and no rows; write a header with the columns "
             "video_id, path, label, subject (and split), then one row per video"),
    (HEADER + "\n", "{table}: no rows under the header; add one row per video"),
    (f"{HEADER}\na\tv/a.avi\tanger\tS1\tx\n", "{table} line 2: 5 fields, but the header has 4 "
                                              "(video_id, path, label, subject)"),
    ("video_id,path,label,subject\n", "{table}: missing column(s) ['video_id', 'path', 'label', "
                                      "'subject']; required: ['video_id', 'path', 'label', "
                                      "'subject']; found: ['video_id,path,label,subject']"),
])
def test_empty_and_malformed_tables_name_the_file(tmp_path, text, message):
    fails(write_table(tmp_path, text), message)


def test_csv_tables_with_a_byte_order_mark(tmp_path):
    table = write_table(tmp_path, "\ufeffvideo_id,path,label,subject\na,v/a.avi,anger,S1\n"
                                  "b,v/b.avi,happiness,S2\n", name="samples.csv")
    assert load_samples(table, CLASSES, SCHEMA)["video_id"].tolist() == ["a", "b"]


# 6. a video whose frame size changes midway

def write_mjpeg(path: Path, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    """A raw MJPEG stream (FFmpeg reads it at 25 fps) of noisy frames of the given (w, h)."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        for w, h in sizes:
            frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            fh.write(cv2.imencode(".jpg", frame)[1].tobytes())
    return path


def test_a_lower_frame_midway_fails_the_video(tmp_path):
    path = write_mjpeg(tmp_path / "shrinks.mjpeg", [(320, 240)] * 25 + [(160, 120)] * 35)
    message = (f"frame size changes from 320x240 to 120 rows at frame 25 (OpenCV keeps the "
               f"first size and fills only the top 120 rows: rows 120-239 of frames 25-49 "
               f"repeat frame 24 byte for byte); re-encode it at one frame size: {path}")
    with pytest.raises(FrameSizeError) as error:
        read_video(path)
    assert str(error.value) == message


def test_a_higher_frame_midway_fails_the_video(tmp_path):
    path = write_mjpeg(tmp_path / "grows.mjpeg", [(160, 120)] * 25 + [(320, 240)] * 30)
    message = (f"frame size changes from 160x120 to a larger size at frame 25 (OpenCV keeps "
               f"the first size and stops decoding: frames 25-49 repeat frame 24 byte for "
               f"byte), or the video freezes; re-encode it at one frame size: {path}")
    with pytest.raises(FrameSizeError) as error:
        read_video(path)
    assert str(error.value) == message


def test_an_image_sequence_whose_frame_size_changes(tmp_path):
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(320, 240)] * 3 + [(160, 120)] * 2):
        cv2.imwrite(str(tmp_path / f"f{i + 1}.png"), rng.integers(0, 256, (h, w, 3), np.uint8))
    with pytest.raises(FrameSizeError) as error:
        read_video(tmp_path)
    assert str(error.value) == (f"frame size changes from 320x240 to 160x120 at frame 3 (f4.png): "
                                f"{tmp_path}")


@pytest.mark.parametrize("damage", ["header", "payload"])
def test_a_video_that_decodes_no_frame_has_one_reason(tmp_path, damage):
    """A destroyed header is refused by FFmpeg when opening, a destroyed payload behind an
    intact header opens and then yields no frame: the reason is the same."""
    from vfer.demo import write_video
    from vfer.video import VideoError

    rng = np.random.default_rng(3)
    path = tmp_path / "clip.avi"
    write_video(path, rng.integers(0, 256, (10, 64, 64, 3), dtype=np.uint8))
    data = bytearray(path.read_bytes())
    span = slice(0, 4096) if damage == "header" else slice(4096, len(data))
    data[span] = rng.integers(0, 256, len(data[span]), dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(VideoError) as error:
        read_video(path)
    assert str(error.value) == f"cannot decode (not a video, or an unsupported codec): {path}"


def test_static_videos_and_short_freezes_are_read(tmp_path):
    from vfer.demo import write_video

    rng = np.random.default_rng(1)
    still = np.full((40, 120, 160, 3), 90, np.uint8)
    live = rng.integers(0, 256, (30, 120, 160, 3), dtype=np.uint8)
    boxed = live.copy()
    boxed[:, 90:] = 0  # a letterbox band: the same from the first frame on
    short_freeze = np.concatenate([live, np.repeat(live[-1:], 20, axis=0), live])
    for name, frames in [("still", still), ("boxed", boxed), ("freeze", short_freeze)]:
        write_video(tmp_path / f"{name}.avi", frames)
        assert len(read_video(tmp_path / f"{name}.avi")[0]) == len(frames)


def test_frame_intervals_tell_a_variable_frame_rate(demo_clip):
    from vfer.video import FrameSource, frame_intervals, variable_rate_note

    with FrameSource(demo_clip[0]) as src:
        frames = list(src)
    assert frame_intervals(src.times_ms) == pytest.approx([40, 40, 40])  # 25 fps
    assert len(src.times_ms) == len(frames)
    assert frame_intervals([33, 67, 100, 133]) == [33.0, 33.0, 34.0]  # whole ms at 29.97 fps
    assert variable_rate_note(frame_intervals([33, 67, 100, 133])) == ""
    assert frame_intervals([0, 33.3, 75, 116.7]) == pytest.approx([33.3, 41.7, 41.7])
    assert variable_rate_note([33.3, 41.7, 41.7]) == (
        "variable frame rate (frames 33.3-41.7 ms apart): frames are taken as equally spaced, "
        "so segments span unequal times and a flow grows with its interval; re-encode at a "
        "constant rate (ffmpeg -fps_mode cfr -r N)")
    # Raw streams give no timestamps (the same value for every frame): unknown, no note.
    assert frame_intervals([-3.7e20] * 5) is None and frame_intervals([0.0]) is None
    assert variable_rate_note(None) == ""


def test_the_video_fails_alone_in_its_shard(tmp_path, demo_clip):
    import h5py

    from tests.conftest import stage_defaults
    from vfer import faces

    bad = write_mjpeg(tmp_path / "shrinks.mjpeg", [(320, 240)] * 25 + [(160, 120)] * 35)
    out, failures = tmp_path / "s0000.h5", tmp_path / "s0000.failures.tsv"
    rows = faces.process_shard([("bad", str(bad)), ("good", str(demo_clip[0]))], str(out),
                               str(failures), str(tmp_path / "s0000.png"),
                               stage_defaults("faces", size=[64, 64]), {})
    assert [(r["video_id"], r["reason"].split(" (")[0]) for r in rows] == [
        ("bad", "frame size changes from 320x240 to 120 rows at frame 25")]
    assert str(bad) in rows[0]["reason"]
    with h5py.File(out) as f:
        assert list(f) == ["good"] and len(f["good/frames"]) == len(demo_clip[1])


# 12. demo-data arguments

CHOICES = "anger, disgust, fear, happiness, sadness, surprise"


@pytest.mark.parametrize("args, message", [
    (["--classes", "neutral"], "--classes: the demo cannot animate 'neutral'; choose from "
                               + CHOICES),
    (["--classes", "anger", "anger"], "--classes: 'anger' is given more than once; list each "
                                      "class once"),
    (["--classes", "anger"], f"--classes: give at least 2 of {CHOICES} (a classifier needs two "
                             "classes), got ['anger']"),
    (["--subjects", "0"], "--subjects: must be at least 1, got 0"),
    (["--clips", "0"], "--clips: must be at least 1, got 0"),
    (["--seed", "-1"], "--seed: must be at least 0, got -1"),
    (["--processes", "0"], "--processes: must be at least 1, got 0"),
])
def test_demo_data_refuses_bad_arguments(tmp_path, capsys, args, message):
    assert main(["demo-data", str(tmp_path / "demo"), *args]) == 2
    assert capsys.readouterr().err == f"vfer demo-data: error: {message}\n"
    assert not (tmp_path / "demo").exists()


# 13. vfer manifest --config: a config is data (yaml.safe_load), errors name the file and line

@pytest.mark.parametrize("text, message", [
    ("classes: !!python/object/apply:os.system ['echo hi']\n",
     "{config} line 1: YAML tag '!!python/object/apply:os.system' is refused (vfer reads "
     "configs with safe_load; a config file is data, not code)"),
    ("seed: 0\nclasses: [anger,\n  happiness\nstreams: {}\n",
     "{config} line 4: invalid YAML: expected ',' or ']', but got ':' (while parsing a flow "
     "sequence)"),
    ("- anger\n- happiness\n", "{config}: not a config: it holds a list, not a mapping of "
                               "settings"),
    ("classes: anger\n", "{config}: classes must be a list of class names, got 'anger'"),
])
def test_manifest_config_errors_name_the_file_and_line(tmp_path, capsys, text, message):
    config = tmp_path / "my.yaml"
    config.write_text(text)
    (tmp_path / "data").mkdir()
    out = tmp_path / "samples.tsv"
    assert main(["manifest", str(tmp_path / "data"), "--layout", "generic", "-o", str(out),
                 "--config", str(config)]) == 2
    assert capsys.readouterr().err == f"vfer manifest: error: {message.format(config=config)}\n"
    assert not out.exists()
