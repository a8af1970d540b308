"""The samples table: one row per video (video_id, path, label, subject[, split]).

``load_samples`` validates the whole table before any job runs and stops at the first problem
with a message that names the table, the row (the 1-based line on which it starts in the file)
and the column. Every value is kept as exact text: ``NA``, ``null`` and ``007`` are ids, not
missing values or numbers. Relative paths are resolved against the table's own folder.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

REQUIRED = ("video_id", "path", "label", "subject")
#: The samples table's schema (columns, id characters, split values).
SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "samples.schema.yaml"
#: What Snakemake reads inside a file path instead of taking it literally.
SNAKEMAKE_PLACEHOLDERS = {"path variable": re.compile(r"<\w+>"),
                          "wildcard": re.compile(r"\{\s*\w[^{}]*\}")}


class SamplesError(ValueError):
    """A samples table that cannot be used."""


def _records(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """The header, the rows (padded to the header's width) and the line each row starts on.

    Blank lines are skipped; a quoted field may span lines.
    """
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    header, rows, lines, end = None, [], [], 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            for record in reader:
                start, end = end + 1, reader.line_num
                if not record:
                    continue
                if header is None:
                    header = _checked_header(path, start, record)
                    continue
                if len(record) > len(header):
                    raise SamplesError(f"{path} line {start}: {len(record)} fields, but the "
                                       f"header has {len(header)} ({', '.join(header)})")
                rows.append(record + [""] * (len(header) - len(record)))
                lines.append(start)
    except csv.Error as exc:
        raise SamplesError(f"{path} line {end + 1}: not a readable table: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise SamplesError(f"{path}: not a UTF-8 text table: {exc}") from exc
    if header is None:
        raise SamplesError(f"{path}: empty table: no header and no rows; write a header with the "
                           f"columns {', '.join(REQUIRED)} (and split), then one row per video")
    return header, rows, lines


def _checked_header(path: Path, line: int, header: list[str]) -> list[str]:
    """The header, unless a column name appears in it twice (unnamed columns may)."""
    repeated = sorted({c for c in header if c and header.count(c) > 1})
    if repeated:
        raise SamplesError(f"{path} line {line}: column(s) {repeated} appear more than once in "
                           "the header")
    return header


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a TSV (or .csv) table with every column as exact text, indexed by the 1-based line
    on which each row starts in the file."""
    path = Path(path)
    if not path.is_file():
        raise SamplesError(f"samples table not found: {path}")
    header, rows, lines = _records(path)
    return pd.DataFrame(rows, columns=header, index=pd.Index(lines, name="line"), dtype=str)


def snakemake_placeholder(path: str) -> str | None:
    """Describe the first part of ``path`` that Snakemake would not take literally, if any."""
    for kind, pattern in SNAKEMAKE_PLACEHOLDERS.items():
        match = pattern.search(path)
        if match:
            return f"{match[0]!r}, which Snakemake would read as a {kind}, not as part of the name"
    return None


def _row_error(validator, row: dict) -> str | None:
    """The first schema violation or empty required column of a row, as a message."""
    if validator is not None:
        error = next(iter(sorted(validator.iter_errors(row), key=str)), None)
        if error is not None:
            column = error.path[0] if error.path else ", ".join(error.validator_value) \
                if error.validator == "required" else "?"
            return f"column {column!r}: {error.message}"
    for column in REQUIRED:
        if not row[column].strip():
            return f"empty {column!r}"
    return None


def _resolve(table: Path, row: dict, check_files: bool) -> tuple[str | None, str]:
    """(problem or None, the row's video path resolved against the table's folder)."""
    joined = Path(row["path"])
    if not joined.is_absolute():
        joined = table.parent / joined
    video = os.path.normpath(joined)  # lexical: wrong where '..' follows a symbolic link
    if not os.path.exists(video) and os.path.exists(joined):
        video = str(joined)
    placeholder = snakemake_placeholder(video)
    if placeholder:
        return (f"column 'path': {video} holds {placeholder}; rename the file (or its folder) "
                "without '<...>' and '{...}'"), video
    if check_files and not os.path.exists(video):
        return f"file not found: {video}", video
    return None, video


def _missing_classes(path: Path, labels, classes: list[str]) -> None:
    """Stop if a configured class has no video in the table."""
    present = set(labels)
    absent = [c for c in classes if c not in present]
    if len(absent) == 1:
        raise SamplesError(f"config class {absent[0]!r} has no video in {path}; remove it from "
                           "classes or add its videos")
    if absent:
        raise SamplesError(f"config classes {', '.join(map(repr, absent))} have no video in "
                           f"{path}; remove them from classes or add their videos")


def _file_identity(video: str) -> object:
    """Equal for two names of one file: its device and inode (through links, '..' and case
    on case-insensitive file systems), or the real path of a file that does not exist."""
    try:
        status = os.stat(video)
    except OSError:
        return os.path.realpath(video)
    return status.st_dev, status.st_ino


class _Seen:
    """The ids and video files of the rows read so far, to find a row that repeats one."""

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.folded: dict[str, tuple[int, str]] = {}
        self.files: dict[object, tuple[int, dict]] = {}

    def repeated_id(self, line: int, video_id: str) -> str | None:
        """The problem of an id seen before, exactly or but for case."""
        if video_id in self.ids:
            return f"duplicate video_id, first seen on line {self.ids[video_id]}"
        self.ids[video_id] = line
        first, other = self.folded.setdefault(video_id.casefold(), (line, video_id))
        if first != line:
            return (f"video_id differs only in case from {other!r} on line {first} (they collide "
                    "on case-insensitive file systems and in HDF5 group names); rename one")
        return None

    def repeated_file(self, line: int, row: dict, video: str) -> str | None:
        """The problem of a video file that an earlier row lists (under another name, too)."""
        first, other = self.files.setdefault(_file_identity(video), (line, row))
        if first == line:
            return None
        message = (f"same video file as line {first} (video_id {other['video_id']!r}, subject "
                   f"{other['subject']!r}): {video}; list each video once")
        if other["subject"] != row["subject"]:
            message += (f" (under two subjects, {other['subject']!r} and {row['subject']!r}, it "
                        "would be trained on in the folds that test it)")
        return message


def _checked_row(path: Path, line: int, row: dict, validator, known: set[str], seen: _Seen,
                 check_files: bool) -> str:
    """The row's resolved video path; raises SamplesError naming the row's first problem."""
    where = f"{path} line {line} (video_id {row['video_id']!r})"
    problem = _row_error(validator, row) or seen.repeated_id(line, row["video_id"])
    if not problem and row["label"] not in known:
        problem = f"label {row['label']!r} is not one of the configured classes {sorted(known)}"
    if problem:
        raise SamplesError(f"{where}: {problem}")
    problem, video = _resolve(path, row, check_files)
    problem = problem or seen.repeated_file(line, row, video)
    if problem:
        raise SamplesError(f"{where}: {problem}")
    return video


def load_samples(path: str | os.PathLike, classes: list[str], schema: str | os.PathLike | None = None,
                 check_files: bool = True) -> pd.DataFrame:
    """Validated samples table with ``path`` resolved (relative paths are relative to the table)."""
    path = Path(path)
    placeholder = snakemake_placeholder(str(path))
    if placeholder:
        raise SamplesError(f"{path}: the table's path holds {placeholder}; rename or move it")
    table = read_table(path)
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise SamplesError(f"{path}: missing column(s) {missing}; required: {list(REQUIRED)}; "
                           f"found: {list(table.columns)}")
    if table.empty:
        raise SamplesError(f"{path}: no rows under the header; add one row per video")
    validator = None
    if schema is not None:
        with open(schema) as fh:
            validator = jsonschema.Draft202012Validator(yaml.safe_load(fh))
    seen, known = _Seen(), set(classes)
    table["path"] = [_checked_row(path, line, row, validator, known, seen, check_files)
                     for line, row in zip(table.index, table.to_dict("records"))]
    _missing_classes(path, table["label"], classes)
    return table.reset_index(drop=True)
