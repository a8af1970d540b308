"""HDF5 and table I/O shared by all stages: atomic writes, compressed datasets, provenance."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np

import vfer

#: Target chunk size in bytes for image-like datasets (CONVENTIONS: 10 KiB - 1 MiB).
CHUNK_BYTES = 256 * 1024


def canonical_json(obj) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for hashing and attrs."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_of(obj) -> str:
    """SHA-256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def create_h5(path: str | os.PathLike, stage: str, provenance: Mapping) -> Iterator[h5py.File]:
    """Create an HDF5 file atomically with provenance attrs (stage, vfer version, ...)."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            set_provenance(f, {"stage": stage, **provenance})
            yield f


def set_provenance(obj: h5py.HLObject, values: Mapping) -> None:
    """Store provenance as attrs; dicts and lists are stored as canonical JSON strings."""
    obj.attrs["vfer_version"] = vfer.__version__
    for key, value in values.items():
        if isinstance(value, (dict, list, tuple)):
            value = canonical_json(value)
        elif value is None:
            value = "null"
        obj.attrs[key] = value


def open_h5(path: str | os.PathLike, stage: str) -> h5py.File:
    """Open a stage's HDF5 output read-only and check that it was written by that stage."""
    f = h5py.File(path, "r")
    found = f.attrs.get("stage")
    if found != stage:
        f.close()
        raise ValueError(f"{path}: expected a '{stage}' file, found stage={found!r}")
    return f


def json_attr(obj: h5py.HLObject, key: str):
    return json.loads(obj.attrs[key])


def write_array(group: h5py.Group, name: str, data: np.ndarray, compression: str | None = "lzf",
                level: int = 4) -> h5py.Dataset:
    """Write ``data`` chunked along its first axis (about CHUNK_BYTES per chunk), compressed
    with shuffle and ``lzf`` or ``gzip`` at ``level``, or uncompressed (``None``: for natural
    image crops, which lzf shrinks by ~10% while making every read 5x slower)."""
    data = np.ascontiguousarray(data)
    if data.size == 0 or data.ndim == 0:
        return group.create_dataset(name, data=data)
    per_row = max(1, data[0].nbytes)
    rows = int(np.clip(CHUNK_BYTES // per_row, 1, data.shape[0]))
    opts = {"compression_opts": level} if compression == "gzip" else {}
    return group.create_dataset(name, data=data, chunks=(rows,) + data.shape[1:],
                                compression=compression, shuffle=compression is not None, **opts)


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG, atomically."""
    import cv2

    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())
