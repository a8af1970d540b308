"""Samples tables from dataset folders: ``vfer manifest --layout NAME ROOT -o samples.tsv``.

Each layout finds the dataset's clips (video files, or image-sequence folders for CK+), takes
the label and the subject from the file and folder names as the dataset defines them, maps the
label to vfer's class names through aliases (joy/happy/happiness, hate/disgust, ...), keeps the
configured classes and counts what it leaves out. Video files that do not match the layout are
listed and stop the command (``ignore_unmatched`` lets it go on), as do labels that cannot be
mapped and clips without a subject.

| layout   | where label, subject and split come from                                           |
|----------|-------------------------------------------------------------------------------------|
| enterface | ``subject 1/anger/sentence 1/s1_an_1.avi``: subject and emotion folders, checked    |
|          | against the name's code (a name of another subject: the folder wins, with a note)    |
| rml      | ``rml-1/s1/.../an1.avi`` (or ``s1/anger/...``): the ``s<N>`` folder; emotion code or  |
|          | word in the name, or an emotion folder (both: they must agree)                        |
| baum1s   | ``S001/S001_001.mp4``: subject folder; labels from ``labels`` (CSV: clip, label)      |
| afew     | ``Train/Angry/000046280.avi``, ``Val/...``: emotion folder; split Train -> train,    |
|          | Val -> test; AFEW has no subject ids: each clip is its own subject                    |
| ckplus   | ``cohn-kanade-images/S005/001/*.png`` sequences, ``Emotion/S005/001/*_emotion.txt``    |
|          | codes (0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness,         |
|          | 7 surprise); sequences without an emotion file are left out                           |
| ravdess  | ``Actor_12/02-01-06-01-02-01-12.mp4``: modality-channel-emotion-intensity-statement- |
|          | repetition-actor; one file per recording (video-only 02, else audio-video 01)        |
| cremad   | ``1001_DFA_ANG_XX.flv``: actor_sentence_emotion_level                                |
| generic  | ``ROOT/<label>/<subject>/<clip>``, or ``csv``: a table with path, label, subject       |
|          | (and optionally video_id, split), paths relative to the table                         |

Folders are followed through links; hidden files (dot files, ``__MACOSX``) are skipped and
counted in a note; a broken link is a file that does not match.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vfer import BASIC_CLASSES
from vfer.video import image_files

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
    # BAUM-1s' mental states, known so that they are counted as left out, not refused:
    "interest": {"interest", "interested"},
    "concentration": {"concentration", "concentrating"},
    "thinking": {"thinking"},
    "unsure": {"unsure"},
    "bothered": {"bothered"},
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


def _hidden(name: str) -> bool:
    """System files and folders that are no clips: dot files (macOS ``._`` resource forks,
    ``.DS_Store``, ``.ipynb_checkpoints``) and ``__MACOSX``."""
    return name.startswith(".") or name == "__MACOSX"


def _walk(root: Path, scan: Scan) -> list[Path]:
    """Every visible file under ``root``, following folder links (each real folder once); a
    broken link is unmatched, and hidden files are counted in a note."""
    files, seen, hidden = [], set(), 0
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        hidden += sum(_hidden(d) for d in dirs) + sum(_hidden(n) for n in names)
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        for name in names:
            path = Path(folder) / name
            if _hidden(name):
                continue
            if not path.exists():
                scan.unmatched.append(path)  # a broken link
            elif path.is_file():
                files.append(path)
    if hidden:
        scan.notes.append(f"{hidden} hidden files and folders (dot files, __MACOSX) are skipped")
    return sorted(files)


def _videos(root: Path, scan: Scan) -> list[Path]:
    return [p for p in _walk(root, scan) if p.suffix.lower() in VIDEO_EXTENSIONS]


def _disagreeing(scan: Scan, conflicts: list[str], what: str) -> None:
    """Stop on clips whose file name and folders give different labels."""
    if conflicts:
        raise ManifestError(f"{len(conflicts)} clips whose file name names another {what} than "
                            f"their folder: " + "; ".join(conflicts[:10]))


def scan_enterface(root: Path, options: dict) -> Scan:
    """Subject from the ``subject N`` folder and label from the emotion folder, checked against
    the file name's code (``s1_an_1``, also ``s_3_an_1`` and ``s16_su_3avi``). The release
    names some subjects' files after another subject (subject 11's are ``s12_*``): the folder
    wins, with a note; a label that disagrees with its folder stops the command."""
    scan = Scan()
    pattern = re.compile(r"^s_?(\d+)_(an|di|fe|ha|sa|su)_(\d+)(?:avi)?$", re.I)
    subject_folder = re.compile(r"^subject\s*(\d+)$", re.I)
    conflicts, renamed = [], []
    for p in _videos(root, scan):
        m = pattern.match(p.stem)
        if not m:
            scan.unmatched.append(p)
            continue
        folders = p.relative_to(root).parts[:-1]
        named = int(m[1])
        subject = next((int(f[1]) for f in map(subject_folder.match, reversed(folders)) if f),
                       named)
        emotion = next((e for e in map(canonical_label, reversed(folders)) if e), None)
        if emotion and emotion != canonical_label(m[2]):
            conflicts.append(f"{p} ({m[2]} in {emotion})")
        if subject == named:
            vid = f"s{subject}_{m[2].lower()}_{int(m[3])}"
        else:
            renamed.append(p)
            vid = clean_id(f"s{subject}_{p.stem}")
        scan.clips.append(Clip(p, emotion or m[2], f"s{subject}", vid))
    _disagreeing(scan, conflicts, "emotion")
    if renamed:
        scan.notes.append(f"{len(renamed)} files are named for another subject than their "
                          f"'subject N' folder (e.g. {renamed[0]}); the folder's subject is used")
    return scan


def _rml_label(p: Path, folders: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(label from the file name, from the folders): ``an1``, ``anger2``, ``happy_3``."""
    m = re.match(r"^([a-z]+)[\d_-]*$", p.stem, re.I)
    code = m and m[1].lower()
    name = code if code in {"an", "di", "fe", "ha", "sa", "su"} or \
        (code and canonical_label(code)) else None
    folder = next((d for d in reversed(folders) if canonical_label(d)), None)
    return name, folder


def scan_rml(root: Path, options: dict) -> Scan:
    """Subject from the one folder named ``s<N>`` (``rml-1/s3/English/an1.avi``); label from
    the file name's emotion code or word, else from an emotion folder; both present and
    different stops the command."""
    scan = Scan()
    conflicts = []
    for p in _videos(root, scan):
        folders = p.relative_to(root).parts[:-1]
        subjects = [d for d in folders if re.fullmatch(r"s\d+", d, re.I)]
        name, folder = _rml_label(p, folders)
        if len(subjects) != 1 or not (name or folder):
            scan.unmatched.append(p)
            continue
        if name and folder and canonical_label(name) != canonical_label(folder):
            conflicts.append(f"{p} ({name} in {folder})")
        subject = subjects[0].lower()
        below = folders[folders.index(subjects[0]) + 1:]  # e.g. a language folder
        scan.clips.append(Clip(p, name or folder, subject,
                               clean_id("_".join((subject, *below, p.stem)))))
    _disagreeing(scan, conflicts, "emotion")
    return scan


def _read_table(path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A CSV/TSV (any separator) with ``columns``, as text; a clear error naming the file."""
    try:
        table = pd.read_csv(path, sep=None, engine="python", dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ManifestError(f"table not found: {path}") from None
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ManifestError(f"{path}: not a readable CSV or TSV table ({exc})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}")
    return table


def scan_baum1s(root: Path, options: dict) -> Scan:
    scan = Scan()
    if not options.get("labels"):
        raise ManifestError("layout baum1s needs --labels: a CSV or TSV with columns clip, label "
                            "(BAUM-1s distributes its labels as an annotation sheet)")
    table = _read_table(options["labels"], ("clip", "label"))
    labels = {}
    for clip, label in zip(table["clip"], table["label"]):
        stem = Path(clip).stem
        if labels.setdefault(stem, label) != label:
            raise ManifestError(f"{options['labels']}: clip {stem} is labelled both "
                                f"{labels[stem]!r} and {label!r}")
    pattern = re.compile(r"^(S\d+)_\d+$", re.I)
    found = set()
    for p in _videos(root, scan):
        m = pattern.match(p.stem)
        if not m or p.stem not in labels:
            scan.unmatched.append(p)
            continue
        subject = m[1].upper()
        folder = next((d.upper() for d in p.relative_to(root).parts[:-1]
                       if re.fullmatch(r"S\d+", d, re.I)), subject)
        if folder != subject:
            scan.unmatched.append(p)  # a clip in another subject's folder
            continue
        found.add(p.stem)
        scan.clips.append(Clip(p, labels[p.stem], subject, clean_id(p.stem)))
    if set(labels) - found:
        scan.notes.append(f"{len(set(labels) - found)} clips of the labels sheet have no video "
                          f"file (e.g. {sorted(set(labels) - found)[0]})")
    return scan


def scan_afew(root: Path, options: dict) -> Scan:
    scan = Scan(notes=["AFEW has no subject ids: every clip is its own subject; evaluate with "
                       "protocol split (Train trains, Val tests)"])
    splits = {"train": "train", "val": "test"}
    for p in _videos(root, scan):
        parts = p.relative_to(root).parts
        split = splits.get(parts[0].lower()) if len(parts) == 3 else None
        if split is None:
            scan.unmatched.append(p)
            continue
        vid = clean_id(f"{parts[0]}_{p.stem}")
        scan.clips.append(Clip(p, parts[1], vid, vid, split))
    return scan


def _ckplus_code(path: Path) -> int:
    """The CK+ emotion code in ``path`` (a float like ``3.0000000e+00``), a whole number."""
    try:
        value = float(path.read_text().split()[0])
    except (IndexError, ValueError, UnicodeDecodeError):
        raise ManifestError(f"{path}: not a CK+ emotion file (one number, e.g. "
                            "3.0000000e+00)") from None
    if not value.is_integer() or int(value) not in CKPLUS_EMOTIONS:
        raise ManifestError(f"{path}: unknown CK+ emotion code {value:g} (0-7)")
    return int(value)


def scan_ckplus(root: Path, options: dict) -> Scan:
    scan = Scan()
    images = root / "cohn-kanade-images"
    emotions = root / "Emotion"
    if not images.is_dir():
        raise ManifestError(f"layout ckplus: no cohn-kanade-images folder in {root}")
    if not emotions.is_dir():
        raise ManifestError(f"layout ckplus: no Emotion folder (the labels) in {root}")
    unlabelled = 0
    for subject_dir in sorted(p for p in images.iterdir() if p.is_dir() and not _hidden(p.name)):
        for seq in sorted(p for p in subject_dir.iterdir() if p.is_dir() and not _hidden(p.name)):
            frames = [f for f in image_files(seq) if not _hidden(f.name)]
            if not frames or not re.fullmatch(r"S\d+", subject_dir.name):
                scan.unmatched.append(seq)
                continue
            files = sorted((emotions / subject_dir.name / seq.name).glob("*_emotion.txt"))
            if not files:
                unlabelled += 1
                continue
            scan.clips.append(Clip(seq, CKPLUS_EMOTIONS[_ckplus_code(files[-1])],
                                   subject_dir.name, clean_id(f"{subject_dir.name}_{seq.name}")))
    if unlabelled:
        scan.notes.append(f"{unlabelled} sequences have no emotion file (CK+ labels 327 of 593) "
                          "and are left out")
    return scan


def scan_ravdess(root: Path, options: dict) -> Scan:
    """RAVDESS names hold modality-channel-emotion-intensity-statement-repetition-actor. Its
    audio-video (01) and video-only (02) files of one recording are the same video: modality
    ``auto`` keeps one file per recording (02, else 01), ``01`` or ``02`` only those, ``all``
    both (each recording then counts twice, in training and in the test folds)."""
    scan = Scan()
    pattern = re.compile(r"^(0[1-3])-(0[12])-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d{2})$")
    modality = options.get("modality") or "auto"
    modalities = {"01", "02"} if modality in ("all", "auto") else {modality}
    recordings: dict[str, dict[str, tuple[Path, re.Match]]] = {}
    for p in _videos(root, scan):
        m = pattern.match(p.stem)
        if not m:
            scan.unmatched.append(p)
            continue
        folder = next((d for d in p.relative_to(root).parts[:-1]
                       if re.fullmatch(r"Actor_\d+", d, re.I)), None)
        if folder is not None and int(folder[6:]) != int(m[7]):
            scan.unmatched.append(p)  # a file in another actor's folder
            continue
        if m[1] not in modalities:
            continue
        versions = recordings.setdefault(p.stem[3:], {})
        if m[1] in versions:
            raise ManifestError(f"two files of one recording: {versions[m[1]][0]} and {p}")
        versions[m[1]] = (p, m)
    left_out = 0
    for versions in recordings.values():
        keep = sorted(versions) if modality == "all" else [max(versions)]  # 02 before 01
        left_out += len(versions) - len(keep)
        for p, m in (versions[k] for k in keep):
            scan.clips.append(Clip(p, RAVDESS_EMOTIONS[m[3]], f"Actor_{m[7]}", clean_id(p.stem)))
    if left_out:
        scan.notes.append(f"{left_out} audio-video files (01) of recordings that also have a "
                          "video-only file (02) are left out: the same video (--modality all "
                          "keeps both)")
    return scan


def scan_cremad(root: Path, options: dict) -> Scan:
    scan = Scan()
    pattern = re.compile(r"^(\d{4})_([A-Z]{3})_(ANG|DIS|FEA|HAP|NEU|SAD)_(XX|LO|MD|HI|X)$")
    for p in _videos(root, scan):
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
        table = _read_table(table_path, ("path", "label", "subject"))
        for row in table.to_dict("records"):
            p = Path(row["path"])
            p = p if p.is_absolute() else table_path.parent / p
            vid = row.get("video_id") or clean_id(f"{row['label']}_{row['subject']}_{p.stem}")
            scan.clips.append(Clip(p, row["label"], row["subject"] or None, vid,
                                   row.get("split") or None))
        return scan
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not _hidden(p.name)):
        for subject_dir in sorted(p for p in label_dir.iterdir() if not _hidden(p.name)):
            if not subject_dir.is_dir():
                scan.unmatched.append(subject_dir)
                continue
            for clip in sorted(p for p in subject_dir.iterdir() if not _hidden(p.name)):
                is_video = clip.is_file() and clip.suffix.lower() in VIDEO_EXTENSIONS
                if clip.is_dir() and not image_files(clip):
                    scan.unmatched.append(clip)  # a folder of videos is no image sequence
                    continue
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
