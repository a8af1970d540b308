"""Samples tables from dataset folders: ``vfer manifest --layout NAME ROOT -o samples.tsv``.

Each layout finds the dataset's clips (video files, or image-sequence folders for CK+), takes
the label and the subject from the file and folder names as the dataset defines them, maps the
label to vfer's class names through aliases (joy/happy/happiness, hate/disgust, ...), keeps the
configured classes and counts what it leaves out. Video files that do not match the layout are
listed and stop the command (``ignore_unmatched`` lets it go on), as do labels that cannot be
mapped and clips without a subject.

| layout   | where label, subject and split come from                                           |
|----------|-------------------------------------------------------------------------------------|
| enterface | ``subject 1/anger/sentence 1/s1_an_1.avi``: subject and emotion code in the name    |
| rml      | ``s1/.../an1.avi`` (or ``s1/anger/...``): subject folder, emotion code or folder      |
| baum1s   | ``S001/S001_001.mp4``: subject folder; labels from ``labels`` (CSV: clip, label)      |
| afew     | ``Train/Angry/000046280.avi``, ``Val/...``: emotion folder; split Train -> train,    |
|          | Val -> test; AFEW has no subject ids: each clip is its own subject                    |
| ckplus   | ``cohn-kanade-images/S005/001/*.png`` sequences, ``Emotion/S005/001/*_emotion.txt``    |
|          | codes (0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness,         |
|          | 7 surprise); sequences without an emotion file are left out                           |
| ravdess  | ``Actor_12/02-01-06-01-02-01-12.mp4``: modality-channel-emotion-intensity-statement- |
|          | repetition-actor; video-only (02) and audio-video (01) files                         |
| cremad   | ``1001_DFA_ANG_XX.flv``: actor_sentence_emotion_level                                |
| generic  | ``ROOT/<label>/<subject>/<clip>``, or ``csv``: a table with path, label, subject       |
|          | (and optionally video_id, split), paths relative to the table                         |
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vfer import BASIC_CLASSES
from vfer.video import IMAGE_EXTENSIONS

VIDEO_EXTENSIONS = {".avi", ".mp4", ".mov", ".mkv", ".flv", ".mpg", ".mpeg", ".wmv", ".webm", ".m4v"}

#: Canonical class -> names that datasets use for it (compared in lower case).
ALIASES = {
    "anger": {"anger", "angry", "an", "ang", "mad"},
    "disgust": {"disgust", "disgusted", "di", "dis", "hate"},
    "fear": {"fear", "fearful", "afraid", "scared", "fe", "fea"},
    "happiness": {"happiness", "happy", "joy", "ha", "hap"},
    "sadness": {"sadness", "sad", "sa"},
    "surprise": {"surprise", "surprised", "su", "sur"},
    "neutral": {"neutral", "neu", "ne"},
    "contempt": {"contempt", "co"},
    "calm": {"calm"},
    "boredom": {"boredom", "bored"},
}
RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
                    "06": "fearful", "07": "disgust", "08": "surprised"}
CKPLUS_EMOTIONS = {0: "neutral", 1: "anger", 2: "contempt", 3: "disgust", 4: "fear", 5: "happy",
                   6: "sadness", 7: "surprise"}


class ManifestError(ValueError):
    """A dataset folder that cannot be turned into a samples table."""


@dataclass
class Clip:
    path: Path
    label: str  # as the dataset names it
    subject: str | None
    video_id: str
    split: str | None = None


@dataclass
class Scan:
    clips: list[Clip] = field(default_factory=list)
    unmatched: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def canonical_label(name: str) -> str | None:
    """vfer's class name for a dataset's label, or None if no alias matches."""
    key = name.strip().lower()
    for canon, names in ALIASES.items():
        if key in names:
            return canon
    return None


def clean_id(text: str) -> str:
    """A video_id the samples schema accepts (letters, digits, _ . + -)."""
    out = re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_.+-")
    return out or "clip"


def _videos(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def scan_enterface(root: Path, options: dict) -> Scan:
    scan = Scan()
    pattern = re.compile(r"^s(\d+)_(an|di|fe|ha|sa|su)_(\d+)$", re.I)
    for p in _videos(root):
        m = pattern.match(p.stem)
        if not m:
            scan.unmatched.append(p)
            continue
        scan.clips.append(Clip(p, m[2], f"s{int(m[1])}", clean_id(p.stem)))
    return scan


def scan_rml(root: Path, options: dict) -> Scan:
    scan = Scan()
    code = re.compile(r"^(an|di|fe|ha|sa|su)\D*\d*$", re.I)
    for p in _videos(root):
        parts = p.relative_to(root).parts
        label = None
        m = code.match(p.stem)
        if m:
            label = m[1]
        else:
            label = next((d for d in parts[1:-1] if canonical_label(d)), None)
        if label is None or len(parts) < 2:
            scan.unmatched.append(p)
            continue
        subject = parts[0]
        scan.clips.append(Clip(p, label, subject, clean_id(f"{subject}_{p.stem}")))
    return scan


def scan_baum1s(root: Path, options: dict) -> Scan:
    scan = Scan()
    if not options.get("labels"):
        raise ManifestError("layout baum1s needs --labels: a CSV or TSV with columns clip, label "
                            "(BAUM-1s distributes its labels as an annotation sheet)")
    table = pd.read_csv(options["labels"], sep=None, engine="python", dtype=str,
                        keep_default_na=False)
    missing = [c for c in ("clip", "label") if c not in table.columns]
    if missing:
        raise ManifestError(f"{options['labels']}: missing column(s) {missing}")
    labels = {Path(c).stem: lab for c, lab in zip(table["clip"], table["label"])}
    pattern = re.compile(r"^(S\d+)_\d+$", re.I)
    for p in _videos(root):
        m = pattern.match(p.stem)
        if not m or p.stem not in labels:
            scan.unmatched.append(p)
            continue
        scan.clips.append(Clip(p, labels[p.stem], m[1].upper(), clean_id(p.stem)))
    return scan


def scan_afew(root: Path, options: dict) -> Scan:
    scan = Scan(notes=["AFEW has no subject ids: every clip is its own subject; evaluate with "
                       "protocol split (Train trains, Val tests)"])
    splits = {"train": "train", "val": "test"}
    for p in _videos(root):
        parts = p.relative_to(root).parts
        split = splits.get(parts[0].lower()) if len(parts) == 3 else None
        if split is None:
            scan.unmatched.append(p)
            continue
        vid = clean_id(f"{parts[0]}_{p.stem}")
        scan.clips.append(Clip(p, parts[1], vid, vid, split))
    return scan


def scan_ckplus(root: Path, options: dict) -> Scan:
    scan = Scan()
    images = root / "cohn-kanade-images"
    emotions = root / "Emotion"
    if not images.is_dir():
        raise ManifestError(f"layout ckplus: no cohn-kanade-images folder in {root}")
    unlabelled = 0
    for subject_dir in sorted(p for p in images.iterdir() if p.is_dir()):
        for seq in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
            frames = [f for f in seq.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS]
            if not frames or not re.fullmatch(r"S\d+", subject_dir.name):
                scan.unmatched.append(seq)
                continue
            files = sorted((emotions / subject_dir.name / seq.name).glob("*_emotion.txt"))
            if not files:
                unlabelled += 1
                continue
            code = int(round(float(files[-1].read_text().split()[0])))
            if code not in CKPLUS_EMOTIONS:
                raise ManifestError(f"{files[-1]}: unknown CK+ emotion code {code}")
            scan.clips.append(Clip(seq, CKPLUS_EMOTIONS[code], subject_dir.name,
                                   clean_id(f"{subject_dir.name}_{seq.name}")))
    if unlabelled:
        scan.notes.append(f"{unlabelled} sequences have no emotion file (CK+ labels 327 of 593) "
                          "and are left out")
    return scan


def scan_ravdess(root: Path, options: dict) -> Scan:
    scan = Scan()
    pattern = re.compile(r"^(0[1-3])-(0[12])-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d{2})$")
    modalities = {"01", "02"} if options.get("modality", "all") == "all" else {options["modality"]}
    for p in _videos(root):
        m = pattern.match(p.stem)
        if not m:
            scan.unmatched.append(p)
            continue
        if m[1] not in modalities:
            continue
        scan.clips.append(Clip(p, RAVDESS_EMOTIONS[m[3]], f"Actor_{m[7]}", clean_id(p.stem)))
    return scan


def scan_cremad(root: Path, options: dict) -> Scan:
    scan = Scan()
    pattern = re.compile(r"^(\d{4})_([A-Z]{3})_(ANG|DIS|FEA|HAP|NEU|SAD)_(XX|LO|MD|HI|X)$")
    for p in _videos(root):
        m = pattern.match(p.stem)
        if not m:
            scan.unmatched.append(p)
            continue
        scan.clips.append(Clip(p, m[3], m[1], clean_id(p.stem)))
    return scan


def scan_generic(root: Path, options: dict) -> Scan:
    scan = Scan()
    if options.get("csv"):
        table_path = Path(options["csv"])
        table = pd.read_csv(table_path, sep=None, engine="python", dtype=str, keep_default_na=False)
        missing = [c for c in ("path", "label", "subject") if c not in table.columns]
        if missing:
            raise ManifestError(f"{table_path}: missing column(s) {missing}")
        for row in table.to_dict("records"):
            p = Path(row["path"])
            p = p if p.is_absolute() else table_path.parent / p
            vid = row.get("video_id") or clean_id(f"{row['label']}_{row['subject']}_{p.stem}")
            scan.clips.append(Clip(p, row["label"], row["subject"] or None, vid,
                                   row.get("split") or None))
        return scan
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for subject_dir in sorted(label_dir.iterdir()):
            if not subject_dir.is_dir():
                scan.unmatched.append(subject_dir)
                continue
            for clip in sorted(subject_dir.iterdir()):
                is_video = clip.is_file() and clip.suffix.lower() in VIDEO_EXTENSIONS
                if not (is_video or clip.is_dir()):
                    continue
                scan.clips.append(Clip(clip, label_dir.name, subject_dir.name,
                                       clean_id(f"{label_dir.name}_{subject_dir.name}_{clip.stem}")))
    return scan


LAYOUTS = {"enterface": scan_enterface, "rml": scan_rml, "baum1s": scan_baum1s, "afew": scan_afew,
           "ckplus": scan_ckplus, "ravdess": scan_ravdess, "cremad": scan_cremad,
           "generic": scan_generic}


@dataclass
class Manifest:
    table: pd.DataFrame
    excluded: Counter  # class -> clips left out
    unmatched: list[Path]
    notes: list[str]

    def summary(self) -> str:
        lines = [f"{len(self.table)} clips of {self.table['subject'].nunique()} subjects"]
        for label, n in self.table["label"].value_counts().sort_index().items():
            lines.append(f"  {label}: {n}")
        for label, n in sorted(self.excluded.items()):
            lines.append(f"  excluded {label}: {n} (not in the classes)")
        if self.unmatched:
            lines.append(f"  ignored {len(self.unmatched)} files that do not match the layout")
        return "\n".join(lines + self.notes)


def build(layout: str, root: str | os.PathLike, classes: list[str] | None = None,
          out_dir: str | os.PathLike | None = None, ignore_unmatched: bool = False,
          **options) -> Manifest:
    """Scan a dataset folder with ``layout`` into a samples table (paths relative to
    ``out_dir``, where the table will be written)."""
    if layout not in LAYOUTS:
        raise ManifestError(f"unknown layout {layout!r}; choose from {sorted(LAYOUTS)}")
    root = Path(root)
    if not root.is_dir() and not (layout == "generic" and options.get("csv")):
        raise ManifestError(f"dataset folder not found: {root}")
    classes = list(classes or BASIC_CLASSES)
    unknown = [c for c in classes if c not in ALIASES]
    if unknown:
        raise ManifestError(f"unknown classes {unknown}; vfer knows {sorted(ALIASES)}")
    scan = LAYOUTS[layout](root, options)
    if scan.unmatched and not ignore_unmatched:
        shown = "\n  ".join(str(p) for p in scan.unmatched[:20])
        more = f"\n  ... and {len(scan.unmatched) - 20} more" if len(scan.unmatched) > 20 else ""
        raise ManifestError(f"{len(scan.unmatched)} files in {root} do not match layout {layout} "
                            f"(use --ignore-unmatched to leave them out):\n  {shown}{more}")
    if not scan.clips:
        raise ManifestError(f"no clips found in {root} with layout {layout}")
    unmapped = sorted({c.label for c in scan.clips if canonical_label(c.label) is None})
    if unmapped:
        examples = [str(c.path) for c in scan.clips if c.label in unmapped][:5]
        raise ManifestError(f"labels that cannot be mapped to a class: {unmapped}, e.g. "
                            f"{examples}")
    nameless = [str(c.path) for c in scan.clips if not c.subject]
    if nameless:
        raise ManifestError(f"{len(nameless)} clips have no subject, e.g. {nameless[:5]}")
    out_dir = Path(out_dir) if out_dir is not None else Path.cwd()
    rows, excluded = [], Counter()
    for c in scan.clips:
        label = canonical_label(c.label)
        if label not in classes:
            excluded[label] += 1
            continue
        row = {"video_id": c.video_id, "path": os.path.relpath(c.path.resolve(), out_dir.resolve()),
               "label": label, "subject": c.subject}
        if any(x.split for x in scan.clips):
            row["split"] = c.split or ""
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        raise ManifestError(f"none of the {len(scan.clips)} clips is of the classes {classes} "
                            f"(found {dict(excluded)})")
    duplicates = table["video_id"][table["video_id"].duplicated()].tolist() if len(table) else []
    if duplicates:
        raise ManifestError(f"clips with the same video_id: {duplicates[:5]}")
    return Manifest(table, excluded, scan.unmatched, scan.notes)


def write(manifest: Manifest, path: str | os.PathLike) -> None:
    """Write the samples table (TSV) atomically."""
    from vfer.io import atomic_path

    with atomic_path(path) as tmp:
        manifest.table.to_csv(tmp, sep="\t", index=False)
