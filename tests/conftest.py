"""Shared fixtures: small generated clips and the real-data folder (VFER_REAL_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real clips; tests that use it skip when VFER_REAL_DATA is unset."""
    root = os.environ.get("VFER_REAL_DATA")
    if not root:
        pytest.skip("VFER_REAL_DATA is not set")
    path = Path(root)
    if not path.is_dir():
        pytest.skip(f"VFER_REAL_DATA={root} is not a folder")
    return path


@pytest.fixture(scope="session")
def demo_clip(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """One generated demo clip (surprise, subject 1) written as MJPG .avi, with its frames."""
    from vfer import demo

    subject = demo.make_subject(0, 0)
    frames = demo.render_clip(subject, "surprise", np.random.default_rng([0, 0, 1]))
    path = tmp_path_factory.mktemp("clip") / "S01_surprise_01.avi"
    demo.write_video(path, frames)
    return path, frames


@pytest.fixture(scope="session")
def run(tmp_path_factory) -> Path:
    """A folder where the tiny workflow (tests/tiny.py) has run to the end."""
    from tests.tiny import prepare, snakemake

    workdir = prepare(tmp_path_factory.mktemp("workflow"))
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def stage_defaults(section: str, **overrides) -> dict:
    """A config section filled with the defaults of workflow/schemas/config.schema.yaml."""
    import yaml

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"][section]["properties"]
    params = {k: v["default"] for k, v in props.items() if "default" in v}
    params.update(overrides)
    return params
