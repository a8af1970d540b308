"""Samples tables from fixture trees laid out (and named) exactly as each dataset."""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from vfer import manifest
from vfer.cli import main
from vfer.demo import write_video
from vfer.manifest import ManifestError


def clip(path: Path) -> Path:
    """A real 3-frame video (or, for a .wav, a stand-in file) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".wav":
        path.write_bytes(b"RIFF")
    else:
        write_video(path, np.full((3, 16, 16, 3), 100, np.uint8))
    return path


def rows(m) -> list[tuple]:
    cols = ["video_id", "label", "subject"] + (["split"] if "split" in m.table else [])
    return sorted(tuple(r) for r in m.table[cols].itertuples(index=False))


def test_enterface(tmp_path):
    clip(tmp_path / "subject 1/anger/sentence 1/s1_an_1.avi")
    clip(tmp_path / "subject 1/happiness/sentence 2/s1_ha_2.avi")
    clip(tmp_path / "subject 12/surprise/sentence 5/s12_su_5.avi")
    m = manifest.build("enterface", tmp_path, out_dir=tmp_path)
    assert rows(m) == [("s12_su_5", "surprise", "s12"), ("s1_an_1", "anger", "s1"),
                       ("s1_ha_2", "happiness", "s1")]
    assert m.table["path"].tolist()[0] == "subject 1/anger/sentence 1/s1_an_1.avi"


def test_rml(tmp_path):
    clip(tmp_path / "s1/an1.avi")
    clip(tmp_path / "s1/ha2.avi")
    clip(tmp_path / "s2/disgust/clip3.avi")
    m = manifest.build("rml", tmp_path, out_dir=tmp_path)
    assert rows(m) == [("s1_an1", "anger", "s1"), ("s1_ha2", "happiness", "s1"),
                       ("s2_disgust_clip3", "disgust", "s2")]


def test_baum1s_with_its_annotations(tmp_path):
    for name in ("S001/S001_001.mp4", "S001/S001_002.mp4", "S002/S002_001.mp4"):
        clip(tmp_path / "clips" / name)
    labels = tmp_path / "annotations.csv"
    labels.write_text("clip,label\nS001_001.mp4,Joy\nS001_002.mp4,Boredom\nS002_001.mp4,Hate\n")
    m = manifest.build("baum1s", tmp_path / "clips", out_dir=tmp_path, labels=labels)
    assert rows(m) == [("S001_001", "happiness", "S001"), ("S002_001", "disgust", "S002")]
    assert m.excluded == {"boredom": 1}
    with pytest.raises(ManifestError, match="baum1s needs --labels"):
        manifest.build("baum1s", tmp_path / "clips")


def test_afew_split_and_clip_subjects(tmp_path):
    clip(tmp_path / "Train/Angry/000046280.avi")
    clip(tmp_path / "Train/Happy/001234567.avi")
    clip(tmp_path / "Val/Neutral/002345678.avi")
    clip(tmp_path / "Val/Surprise/003456789.avi")
    m = manifest.build("afew", tmp_path, out_dir=tmp_path)
    assert rows(m) == [("Train_000046280", "anger", "Train_000046280", "train"),
                       ("Train_001234567", "happiness", "Train_001234567", "train"),
                       ("Val_003456789", "surprise", "Val_003456789", "test")]
    assert m.excluded == {"neutral": 1}
    seven = manifest.build("afew", tmp_path, out_dir=tmp_path,
                           classes=list(manifest.BASIC_CLASSES) + ["neutral"])
    assert len(seven.table) == 4


def ckplus_tree(root: Path, sequences: dict[tuple[str, str], int | None], frames=3, crops=None):
    """CK+ folders: cohn-kanade-images/Sxxx/nnn/Sxxx_nnn_000000kk.png and Emotion/... files."""
    for (subject, seq), code in sequences.items():
        folder = root / "cohn-kanade-images" / subject / seq
        folder.mkdir(parents=True)
        images = crops[(subject, seq)] if crops else [np.full((48, 48), 90, np.uint8)] * frames
        for k, im in enumerate(images, 1):
            cv2.imwrite(str(folder / f"{subject}_{seq}_{k:08d}.png"), im)
        if code is not None:
            em = root / "Emotion" / subject / seq
            em.mkdir(parents=True)
            (em / f"{subject}_{seq}_{len(images):08d}_emotion.txt").write_text(f"   {code:.7e}\n")


def test_ckplus_sequences_and_emotion_codes(tmp_path):
    ckplus_tree(tmp_path, {("S005", "001"): 3, ("S010", "002"): 2, ("S011", "001"): None,
                           ("S011", "004"): 5})
    m = manifest.build("ckplus", tmp_path, out_dir=tmp_path)
    assert rows(m) == [("S005_001", "disgust", "S005"), ("S011_004", "happiness", "S011")]
    assert m.excluded == {"contempt": 1}
    assert "1 sequences have no emotion file" in m.summary()
    assert m.table["path"].tolist()[0] == "cohn-kanade-images/S005/001"
    with_contempt = manifest.build("ckplus", tmp_path, classes=list(manifest.BASIC_CLASSES) + ["contempt"])
    assert len(with_contempt.table) == 3


def test_ravdess_file_name_code(tmp_path):
    clip(tmp_path / "Actor_01/01-01-06-01-02-01-01.mp4")   # audio-video, fearful
    clip(tmp_path / "Actor_01/02-01-03-02-01-01-01.mp4")   # video only, happy
    clip(tmp_path / "Actor_01/03-01-05-01-01-01-01.wav")   # audio only: not a video
    clip(tmp_path / "Actor_02/02-02-02-01-01-02-02.mp4")   # calm
    m = manifest.build("ravdess", tmp_path, out_dir=tmp_path)
    assert rows(m) == [("01-01-06-01-02-01-01", "fear", "Actor_01"),
                       ("02-01-03-02-01-01-01", "happiness", "Actor_01")]
    assert m.excluded == {"calm": 1}
    video_only = manifest.build("ravdess", tmp_path, modality="02")
    assert video_only.table["video_id"].tolist() == ["02-01-03-02-01-01-01"]


def test_cremad(tmp_path):
    for name in ("1001_DFA_ANG_XX.flv", "1091_TSI_NEU_XX.flv", "1002_IEO_HAP_HI.flv"):
        clip(tmp_path / name)
    m = manifest.build("cremad", tmp_path, out_dir=tmp_path)
    assert rows(m) == [("1001_DFA_ANG_XX", "anger", "1001"), ("1002_IEO_HAP_HI", "happiness", "1002")]
    assert m.excluded == {"neutral": 1}


def test_generic_folders_and_csv(tmp_path):
    clip(tmp_path / "data/joy/subjA/take 1.mp4")
    clip(tmp_path / "data/sad/subjB/x.avi")
    m = manifest.build("generic", tmp_path / "data", out_dir=tmp_path)
    assert rows(m) == [("joy_subjA_take_1", "happiness", "subjA"), ("sad_subjB_x", "sadness", "subjB")]
    table = tmp_path / "map.csv"
    table.write_text("path,label,subject,split\ndata/joy/subjA/take 1.mp4,happy,A,train\n"
                     "data/sad/subjB/x.avi,sadness,B,test\n")
    m = manifest.build("generic", tmp_path, out_dir=tmp_path, csv=table)
    assert rows(m) == [("happy_A_take_1", "happiness", "A", "train"), ("sadness_B_x", "sadness", "B", "test")]


def test_clear_errors(tmp_path):
    with pytest.raises(ManifestError, match="unknown layout 'kdef'"):
        manifest.build("kdef", tmp_path)
    clip(tmp_path / "e/subject 1/anger/sentence 1/s1_an_1.avi")
    clip(tmp_path / "e/subject 1/anger/sentence 1/outtake.avi")
    with pytest.raises(ManifestError, match=r"1 files .* do not match layout enterface.*\n  .*outtake.avi"):
        manifest.build("enterface", tmp_path / "e")
    ok = manifest.build("enterface", tmp_path / "e", ignore_unmatched=True)
    assert len(ok.table) == 1 and ok.unmatched[0].name == "outtake.avi"
    clip(tmp_path / "g/confused/subjA/c.mp4")
    with pytest.raises(ManifestError, match=r"labels that cannot be mapped to a class: \['confused'\]"):
        manifest.build("generic", tmp_path / "g")
    table = tmp_path / "nosubject.csv"
    table.write_text("path,label,subject\ng/confused/subjA/c.mp4,anger,\n")
    with pytest.raises(ManifestError, match="1 clips have no subject"):
        manifest.build("generic", tmp_path, csv=table)


def test_command_line_writes_the_table_and_counts_exclusions(tmp_path, capsys):
    for name in ("1001_DFA_ANG_XX.flv", "1001_DFA_NEU_XX.flv"):
        clip(tmp_path / "cremad" / name)
    out = tmp_path / "config/samples.tsv"
    assert main(["manifest", "--layout", "cremad", str(tmp_path / "cremad"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "excluded neutral: 1" in printed and "anger: 1" in printed
    table = pd.read_csv(out, sep="\t", dtype=str)
    assert table["path"].tolist() == ["../cremad/1001_DFA_ANG_XX.flv"]
    assert main(["manifest", "--layout", "cremad", str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


def test_enterface_subjects_and_labels_come_from_the_folders(tmp_path):
    """The release names subject 11's files s12_*, subject 3's s_3_*, and one s16_su_3avi."""
    clip(tmp_path / "subject 11/anger/sentence 1/s12_an_1.avi")
    clip(tmp_path / "subject 12/anger/sentence 1/s12_an_1.avi")
    clip(tmp_path / "subject 3/fear/sentence 2/s_3_fe_2.avi")
    clip(tmp_path / "subject 16/surprise/sentence 3/s16_su_3avi.avi")
    m = manifest.build("enterface", tmp_path, out_dir=tmp_path)
    assert rows(m) == [("s11_s12_an_1", "anger", "s11"), ("s12_an_1", "anger", "s12"),
                       ("s16_su_3", "surprise", "s16"), ("s3_fe_2", "fear", "s3")]
    assert "1 files are named for another subject than their 'subject N' folder" in m.summary()
    clip(tmp_path / "subject 1/happiness/sentence 1/s1_sa_1.avi")
    with pytest.raises(ManifestError, match=r"1 clips whose file name names another emotion "
                                            r"than their folder: .*s1_sa_1.avi \(sa in happiness"):
        manifest.build("enterface", tmp_path)


def test_rml_subject_folder_below_the_release_folders(tmp_path):
    clip(tmp_path / "rml-1/s1/an1.avi")
    clip(tmp_path / "rml-1/s5/English/sa1.avi")
    clip(tmp_path / "rml-1/s5/Mandarin/sa1.avi")
    clip(tmp_path / "rml-2/s6/anger/sample2.avi")  # "sa..." is no code here: the folder's label
    m = manifest.build("rml", tmp_path, out_dir=tmp_path)
    assert rows(m) == [("s1_an1", "anger", "s1"), ("s5_English_sa1", "sadness", "s5"),
                       ("s5_Mandarin_sa1", "sadness", "s5"), ("s6_anger_sample2", "anger", "s6")]
    clip(tmp_path / "rml-2/s7/fear/an1.avi")
    with pytest.raises(ManifestError, match=r"an1.avi \(an in fear\)"):
        manifest.build("rml", tmp_path)


def test_links_hidden_files_and_broken_links(tmp_path):
    store, data = tmp_path / "store", tmp_path / "data"
    clip(store / "Actor_02/02-01-05-01-01-01-02.mp4")
    clip(data / "Actor_01/02-01-05-01-01-01-01.mp4")
    clip(data / "Actor_01/._02-01-05-01-01-01-01.mp4")  # a macOS resource fork
    clip(data / "__MACOSX/Actor_01/02-01-05-01-01-01-01.mp4")
    (data / "Actor_02").symlink_to(store / "Actor_02", target_is_directory=True)
    m = manifest.build("ravdess", data, out_dir=tmp_path)
    assert sorted(m.table["subject"]) == ["Actor_01", "Actor_02"]
    assert "2 hidden files and folders (dot files, __MACOSX) are skipped" in m.summary()
    (data / "Actor_01/02-01-03-01-01-01-01.mp4").symlink_to(tmp_path / "gone.mp4")
    with pytest.raises(ManifestError, match=r"(?s)1 files .* do not match.*02-01-03-01-01-01-01.mp4"):
        manifest.build("ravdess", data)


def test_ravdess_keeps_one_file_per_recording(tmp_path):
    clip(tmp_path / "Actor_01/01-01-06-01-02-01-01.mp4")  # audio-video
    clip(tmp_path / "Actor_01/02-01-06-01-02-01-01.mp4")  # the same recording, video only
    clip(tmp_path / "Actor_01/01-01-03-01-02-01-01.mp4")  # audio-video only
    m = manifest.build("ravdess", tmp_path, out_dir=tmp_path)
    assert sorted(m.table["video_id"]) == ["01-01-03-01-02-01-01", "02-01-06-01-02-01-01"]
    assert "1 audio-video files (01) of recordings that also have a video-only" in m.summary()
    assert len(manifest.build("ravdess", tmp_path, modality="all").table) == 3
    clip(tmp_path / "Actor_02/02-01-06-01-02-01-01.mp4")  # in another actor's folder
    with pytest.raises(ManifestError, match=r"(?s)1 files .* do not match.*Actor_02/02-01-06"):
        manifest.build("ravdess", tmp_path)


def test_baum1s_sheet_conflicts_and_mental_states(tmp_path):
    for name in ("S001/S001_001.mp4", "S001/S001_002.mp4"):
        clip(tmp_path / "clips" / name)
    labels = tmp_path / "labels.csv"
    labels.write_text("clip,label\nS001_001,Joy\nS001_002,Thinking\nS009_001,Anger\n")
    m = manifest.build("baum1s", tmp_path / "clips", out_dir=tmp_path, labels=labels)
    assert rows(m) == [("S001_001", "happiness", "S001")] and m.excluded == {"thinking": 1}
    assert "1 clips of the labels sheet have no video file (e.g. S009_001)" in m.summary()
    labels.write_text("clip,label\nS001_001,Joy\nS001_001,Anger\n")
    with pytest.raises(ManifestError, match="clip S001_001 is labelled both 'Joy' and 'Anger'"):
        manifest.build("baum1s", tmp_path / "clips", labels=labels)
    with pytest.raises(ManifestError, match="table not found: .*nope.csv"):
        manifest.build("baum1s", tmp_path / "clips", labels=tmp_path / "nope.csv")


@pytest.mark.parametrize("text, message", [("", "not a CK\\+ emotion file"),
                                           ("disgust", "not a CK\\+ emotion file"),
                                           ("2.5e+00", "unknown CK\\+ emotion code 2.5")])
def test_ckplus_emotion_files_that_hold_no_code(tmp_path, text, message):
    ckplus_tree(tmp_path, {("S005", "001"): 3})
    next((tmp_path / "Emotion").rglob("*_emotion.txt")).write_text(text)
    with pytest.raises(ManifestError, match=message):
        manifest.build("ckplus", tmp_path)


def test_generic_subfolders_without_images_are_no_sequences(tmp_path):
    clip(tmp_path / "joy/subjA/take1.mp4")
    clip(tmp_path / "joy/subjA/session2/clip.mp4")
    with pytest.raises(ManifestError, match=r"(?s)1 files .* do not match.*joy/subjA/session2"):
        manifest.build("generic", tmp_path)


def test_a_split_table_is_evaluated_by_its_split_only(tmp_path):
    from vfer.folds import assign_folds

    for name in ("Train/Angry/1.avi", "Train/Happy/2.avi", "Val/Angry/3.avi", "Val/Happy/4.avi"):
        clip(tmp_path / name)
    table = manifest.build("afew", tmp_path, out_dir=tmp_path).table
    assert set(assign_folds(table, "split")["fold"]) == {-1, 0}
    with pytest.raises(ValueError, match="the samples table has a split column .* protocol "
                                         "losgo would mix its rows across folds"):
        assign_folds(table, "losgo", groups=2)
