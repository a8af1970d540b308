from pathlib import Path

import pytest

from vfer.samples import SamplesError, load_samples

SCHEMA = Path(__file__).resolve().parents[1] / "workflow/schemas/samples.schema.yaml"
CLASSES = ["anger", "happiness"]


def write(tmp_path: Path, rows: list[str], header="video_id\tpath\tlabel\tsubject") -> Path:
    (tmp_path / "v").mkdir(exist_ok=True)
    for name in ("a.avi", "b.avi", "c.avi"):
        (tmp_path / "v" / name).write_bytes(b"x")
    table = tmp_path / "samples.tsv"
    table.write_text("\n".join([header] + rows) + "\n")
    return table


def test_valid_table_resolves_paths_relative_to_the_table(tmp_path):
    table = write(tmp_path, ["a\tv/a.avi\tanger\tS1", "b\tv/b.avi\thappiness\tS2"])
    samples = load_samples(table, CLASSES, SCHEMA)
    assert samples["path"].tolist() == [str(tmp_path / "v/a.avi"), str(tmp_path / "v/b.avi")]
    assert samples["subject"].tolist() == ["S1", "S2"]


def test_a_table_in_a_linked_folder_finds_videos_through_the_link(tmp_path):
    (tmp_path / "data/v").mkdir(parents=True)
    (tmp_path / "data/v/a.avi").write_bytes(b"x")
    (tmp_path / "real/a/b/tables").mkdir(parents=True)
    (tmp_path / "real/a/b/tables/samples.tsv").write_text(
        "video_id\tpath\tlabel\tsubject\na\t../../../../data/v/a.avi\tanger\tS1\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config/tables").symlink_to(tmp_path / "real/a/b/tables")
    samples = load_samples(tmp_path / "config/tables/samples.tsv", ["anger"], SCHEMA)
    assert Path(samples["path"][0]).resolve() == (tmp_path / "data/v/a.avi").resolve()


@pytest.mark.parametrize("rows, header, message", [
    (["a\tv/a.avi\tanger"], "video_id\tpath\tlabel", r"missing column\(s\) \['subject'\]"),
    (["a\tv/a.avi\tanger\tS1", "b\tv/b.avi\tangry\tS1"], None,
     r"line 3 \(video_id 'b'\): label 'angry' is not one of"),
    (["a\tv/a.avi\tanger\tS1", "a\tv/b.avi\tanger\tS2"], None,
     r"line 3 \(video_id 'a'\): duplicate video_id, first seen on line 2"),
    (["a\tv/missing.avi\tanger\tS1"], None, r"line 2 \(video_id 'a'\): file not found: .*missing.avi"),
    (["a/b\tv/a.avi\tanger\tS1"], None, r"line 2 \(video_id 'a/b'\): column 'video_id'"),
    (["a\tv/a.avi\tanger\t"], None, r"line 2 \(video_id 'a'\): column 'subject'"),
])
def test_bad_tables_name_the_row(tmp_path, rows, header, message):
    table = write(tmp_path, rows, header or "video_id\tpath\tlabel\tsubject")
    with pytest.raises(SamplesError, match=message):
        load_samples(table, CLASSES, SCHEMA)


def test_missing_table(tmp_path):
    with pytest.raises(SamplesError, match="samples table not found"):
        load_samples(tmp_path / "nope.tsv", CLASSES, SCHEMA)
