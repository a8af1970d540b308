"""The samples table: one row per video (video_id, path, label, subject[, split]).

``load_samples`` validates the whole table before any job runs and stops at the first problem
with a message that names the table, the row (1-based line number in the file) and the column.
Relative paths are resolved against the table's own folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

REQUIRED = ("video_id", "path", "label", "subject")


class SamplesError(ValueError):
    """A samples table that cannot be used."""


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a TSV (or .csv) table with every column as text."""
    path = Path(path)
    if not path.is_file():
        raise SamplesError(f"samples table not found: {path}")
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SamplesError(f"{path}: not a readable table: {exc}") from exc


def load_samples(path: str | os.PathLike, classes: list[str], schema: str | os.PathLike | None = None,
                 check_files: bool = True) -> pd.DataFrame:
    """Validated samples table with ``path`` resolved (relative paths are relative to the table)."""
    path = Path(path)
    table = read_table(path)
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise SamplesError(f"{path}: missing column(s) {missing}; required: {list(REQUIRED)}")
    if table.empty:
        raise SamplesError(f"{path}: no rows")
    validator = None
    if schema is not None:
        with open(schema) as fh:
            validator = jsonschema.Draft202012Validator(yaml.safe_load(fh))
    seen: dict[str, int] = {}
    known = set(classes)
    resolved = []
    for i, row in enumerate(table.to_dict("records")):
        line = i + 2  # header is line 1
        where = f"{path} line {line} (video_id {row['video_id']!r})"
        if validator is not None:
            error = next(iter(sorted(validator.iter_errors(row), key=str)), None)
            if error is not None:
                column = error.path[0] if error.path else ", ".join(error.validator_value) \
                    if error.validator == "required" else "?"
                raise SamplesError(f"{where}: column {column!r}: {error.message}")
        for column in REQUIRED:
            if not row[column].strip():
                raise SamplesError(f"{where}: empty {column!r}")
        if row["video_id"] in seen:
            raise SamplesError(f"{where}: duplicate video_id, first seen on line {seen[row['video_id']]}")
        seen[row["video_id"]] = line
        if row["label"] not in known:
            raise SamplesError(f"{where}: label {row['label']!r} is not one of the configured "
                               f"classes {sorted(known)}")
        video = Path(row["path"])
        if not video.is_absolute():
            video = path.parent / video
        if check_files and not video.exists():
            raise SamplesError(f"{where}: file not found: {video}")
        resolved.append(os.path.normpath(video))
    table["path"] = resolved
    return table
