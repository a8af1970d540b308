"""The arithmetic behind benchmarks/RESULTS.md (the measurements themselves run in make bench)."""

import subprocess
import sys

import pandas as pd
import pytest
import torch

from benchmarks.bench import markdown
from benchmarks.bench_presets_gpu import preset_config
from benchmarks.bench_workflow import busy_seconds, cache_rows, startup_by_rule
from benchmarks.common import REPO, Row
from vfer.config import load


def test_busy_time_is_the_union_of_job_intervals():
    jobs = pd.DataFrame({"s": [4.0, 3.0, 2.0, 1.0], "end": [4.0, 6.0, 12.0, 11.0]})
    # [0, 4] and [3, 6] overlap, [10, 12] contains [10, 11]: busy 6 + 2 s of 12
    assert busy_seconds(jobs) == 8.0


def test_each_figure_is_judged_against_its_target():
    rows = [Row("flow", "ratio", 1.1, "x", 1.2), Row("flow", "ratio 2", 1.3, "x", 1.2),
            Row("flow", "pairs/s", 300.0, "pairs/s")]
    assert [r.met for r in rows] == ["yes", "no", ""]
    table = markdown(rows, [])
    assert "| flow | ratio 2 | 1.3 x | <= 1.2 x | no |" in table
    assert "1 targets met, 1 missed." in table


def test_flow_cache_is_measured_per_flow_method(tmp_path):
    for folder, size in (("farneback-7f65bbbe32", 2048), ("horn_schunck-c5735ac0df", 4096)):
        (tmp_path / "results/flow" / folder).mkdir(parents=True)
        (tmp_path / "results/flow" / folder / "s0000.h5").write_bytes(b"0" * size)
    rows = {r.measure: r for r in cache_rows(tmp_path, frames=2)}
    assert rows["flow (farneback): bytes per input frame"].value == 1.0
    assert rows["flow (horn_schunck): bytes per input frame"].value == 2.0
    assert rows["flow (horn_schunck): bytes per input frame"].target == 30.0
    assert rows["faces: bytes per input frame"].value == 0


def test_start_up_is_timed_for_scripts_whose_imports_carry_comments():
    # train.py imports vfer.training after setting up its log, with a "# noqa" comment
    assert "# noqa" in (REPO / "workflow/scripts/train.py").read_text()
    (seconds,) = startup_by_rule(["train"]).values()
    assert 0 < seconds < 60


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: it would measure")
@pytest.mark.parametrize("module", ["bench_gpu", "profile_gpu"])
def test_gpu_benchmarks_exit_0_and_write_nothing_without_cuda(tmp_path, module):
    out = tmp_path / "GPU.md"
    result = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "no CUDA device; nothing measured" in result.stdout
    assert not out.exists()


#: Runs the module with mediapipe and snakemake unimportable, as on the GPU machine.
WITHOUT_MEDIAPIPE = ("import runpy, sys; sys.modules['mediapipe'] = sys.modules['snakemake'] = "
                     "None; sys.argv = sys.argv[1:]; "
                     "runpy.run_module('benchmarks.bench_presets_gpu', run_name='__main__')")


def test_bench_presets_gpu_check_runs_one_preset_without_mediapipe(tmp_path):
    out = tmp_path / "PRESETS-GPU.md"
    result = subprocess.run([sys.executable, "-c", WITHOUT_MEDIAPIPE, "bench_presets_gpu",
                             "--check-on-cpu", "enhanced_convlstm", "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [r for r in result.stdout.splitlines() if r.startswith("| enhanced_convlstm |")]
    # each of the five networks once as it finished and once in the final table
    models = sorted({r.split(" | ")[1] for r in rows})
    assert models == ["conventional", "conventional_resnet", "enhanced", "proposed", "resnet"]
    assert len(rows) == 10
    plan = load(preset_config("enhanced_convlstm", small=True))
    for r in rows:
        train = plan.models[r.split(" | ")[1]]["train"]
        assert f" | 2 of 2 ({train['steps']} configured) | {train['batch_size']} | " in r, r
    assert "**Weights were random**" in result.stdout
    assert "5 models trained and extracted on the CPU; nothing written" in result.stdout
    assert not out.exists()


def test_bench_presets_gpu_refuses_an_unknown_preset():
    result = subprocess.run([sys.executable, "-m", "benchmarks.bench_presets_gpu", "rfscn"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "unknown preset(s) ['rfscn']" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: it would measure")
def test_bench_presets_gpu_exits_0_and_writes_nothing_without_cuda(tmp_path):
    out = tmp_path / "PRESETS-GPU.md"
    result = subprocess.run([sys.executable, "-c", WITHOUT_MEDIAPIPE, "bench_presets_gpu",
                             "rfscnn", "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "no CUDA device; nothing measured" in result.stdout
    assert not out.exists()


def test_profile_gpu_check_runs_every_section_on_the_cpu(tmp_path):
    out = tmp_path / "GPU-PROFILE.md"
    result = subprocess.run([sys.executable, "-m", "benchmarks.profile_gpu", "--check-on-cpu",
                             "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    (parts,) = [r for r in lines if r.startswith("| small_cnn 128, batch 2 |")]
    assert all(float(ms) > 0 for ms in parts.strip("| ").split(" | ")[1:])
    for section in ("## fit's operations", "## Horn-Schunck 112 x 112",
                    "## TV-L1 112 x 112, stopping checks"):
        assert section in lines
    assert "| aten::convolution_backward |" in result.stdout
    assert not [r for r in lines if r.startswith("failed:")], result.stderr
    tvl1 = lines[lines.index("## TV-L1 112 x 112, stopping checks"):]
    schedules = [r for r in tvl1 if r[:3].strip("| ").isdigit()]
    # every stopping schedule gives the default's flows: stopped pairs keep their values
    assert len(schedules) == 7 and all(r.endswith("| equal |") for r in schedules), schedules
    assert not out.exists()
