"""`snakemake --report` after a run in which jobs failed (--keep-going), and on a dataset of
one subject (features only): the report shows what exists and its first page says what is
missing and why (README, 'Report')."""

from __future__ import annotations

import shutil

import h5py
import pytest

from tests.conftest import REPO
from tests.tiny import CONFIG, snakemake, write_config
from vfer.demo import generate

pytestmark = pytest.mark.workflow
OVERVIEW = "results/report/overview.html"


def flip_a_byte_in_a_chunk(path, group=None, dataset="features"):
    """Damage one chunk of a stage file in place (same size)."""
    with h5py.File(path) as f:
        ds = f[group or next(iter(f))][dataset]
        offset = ds.id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 7] ^= 0xFF
    path.write_bytes(bytes(data))


def test_report_of_a_run_whose_jobs_failed(run, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(run, work, symlinks=True)
    flip_a_byte_in_a_chunk(work / "results/features/temporal/fold0.h5")
    shutil.rmtree(work / "results/experiments/temporal")
    for made in work.glob("results/summary.*"):
        made.unlink()
    failed = snakemake(work, "--keep-going")
    assert failed.returncode != 0 and "Error in rule evaluate" in failed.stderr
    result = snakemake(work, "--report", "results/report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("The report shows what exists; missing (3): experiment temporal: "
            "results/experiments/temporal/metrics.json; experiment fused: "
            "results/experiments/fused/metrics.json; summary: results/summary.md") in result.stderr
    page = (work / OVERVIEW).read_text()
    assert 'id="vfer-summary-table"' in page  # the experiments that have results
    assert "<b>spatial</b>" in page and "<b>rgb_flow</b>" in page
    assert "<b>temporal</b>" not in page and "<b>fused</b>" not in page
    assert "<li>experiment temporal: results/experiments/temporal/metrics.json</li>" in page
    for name in ("temporal", "fused"):  # fused uses temporal's features
        assert (f"<li>failed job: logs/evaluate/{name}.log: vfer.store.StageFileError: "
                "results/features/temporal/fold0.h5: damaged features file") in page
    html = (work / "results/report.html").read_text()
    assert "vfer-missing" in html and "Confusion matrices" in html and "contact.png" in html


def test_report_of_a_single_subject_dataset(tmp_path):
    readme = (REPO / "README.md").read_text()
    assert "snakemake results/features/handcrafted/all.h5" in readme  # the example tested here
    generate(tmp_path / "data", seed=5, subjects=1, clips=2, classes=("happiness", "surprise"),
             processes=2)
    write_config(tmp_path, CONFIG)
    whole = snakemake(tmp_path, "-n")
    assert whole.returncode != 0
    assert "protocol losgo: 1 subjects cannot form 2 subject groups" in whole.stdout + whole.stderr
    features = snakemake(tmp_path, "results/features/handcrafted/all.h5")
    assert features.returncode == 0, features.stderr[-3000:]
    result = snakemake(tmp_path, "--report", "results/report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / OVERVIEW).read_text()
    assert "No experiment has results yet." in page
    assert ("<li>the evaluation cannot run: protocol losgo: 1 subjects cannot form 2 subject "
            "groups</li>") in page
    assert "<li>motion preview of shard s0000: results/preview/s0000.png</li>" in page
    assert "<li>summary: results/summary.md</li>" in page
    assert "s0000.contact.png" in (tmp_path / "results/report.html").read_text()


def test_report_of_a_complete_run_says_nothing_is_missing(run, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(run, work, symlinks=True)
    result = snakemake(work, "--report", "results/report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "missing" not in result.stderr
    page = (work / OVERVIEW).read_text()
    assert 'id="vfer-complete"' in page and 'id="vfer-missing"' not in page
    assert page.startswith((work / "results/summary.html").read_text())
