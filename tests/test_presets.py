"""The five published systems as presets: full scale and small, every reported row linked."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO
from tests.tiny import SNAKEMAKE
from vfer import config as cfg
from vfer import presets
from vfer.cli import main as vfer_main
from vfer.demo import write_video
from vfer.nets.registry import BACKBONES


def merged(*files: Path) -> dict:
    """The config files merged in order, as Snakemake merges several --configfile (which
    replace config/config.yaml, see the Snakefile), with a samples table as --config gives."""
    def merge(a, b):
        for key, value in b.items():
            if isinstance(value, dict) and isinstance(a.get(key), dict):
                merge(a[key], value)
            else:
                a[key] = copy.deepcopy(value)

    config = {"samples": "samples.tsv"}
    for f in files:
        merge(config, yaml.safe_load(Path(f).read_text()))
    return config


@pytest.fixture
def torchvision_home(tmp_path, monkeypatch):
    """A torch hub cache holding (stand-in) torchvision weights files."""
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in BACKBONES:
        file = BACKBONES.meta(name).get("torchvision_file")
        if file:
            (checkpoints / file).write_bytes(b"stand-in")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def structure(plan: cfg.Plan) -> dict:
    """What a small variant must keep: per model its inputs, backbones, taps, pooling, fusion,
    gating and temporal kinds, head kind; per experiment its streams, fusion and classifier."""
    models = {}
    for name, m in plan.models.items():
        if m["kind"] != "network":
            models[name] = m["descriptor"]
            continue
        net = m["network"]
        models[name] = (
            [(b["name"], b["input"], b["backbone"], tuple(b["taps"]), b["pool"],
              (b["temporal"] or {}).get("kind"), b["activation"]) for b in net["branches"]],
            net["fusion"]["kind"], net["fusion"]["gating"], net["temporal"]["kind"],
            net["head"]["kind"], net["features"], m["finetune"])
    experiments = {e: (x["streams"], x["fusion"], x["classifier"]["kind"])
                   for e, x in plan.experiments.items()}
    return {"models": models, "experiments": experiments}


@pytest.mark.parametrize("system", presets.SYSTEMS)
def test_the_small_variant_keeps_the_full_preset_s_structure(system, torchvision_home):
    full = cfg.load(merged(*presets.preset_files(system, small=False)))
    small = cfg.load(merged(*presets.preset_files(system)))
    assert structure(small) == structure(full)
    assert full.experiments and all(e["reported"] is not None for e in full.experiments.values())


@pytest.mark.parametrize("system", presets.SYSTEMS)
def test_every_reported_row_is_linked_to_one_experiment(system, torchvision_home):
    plan = cfg.load(merged(*presets.preset_files(system, small=False)))
    linked = [(r["table"], r["row"]) for e in plan.experiments.values() for r in e["reported"]]
    rows = {(r["table"], r["row"]) for r in presets.reported_rows(system)}
    assert rows, system
    assert set(linked) == rows  # every row of the paper's tables, and nothing else
    assert len(linked) == len(set(linked))  # each row reproduced by one experiment


LAYOUTS = {  # the dataset layout each paper used, as vfer manifest reads it
    "enterface": lambda root, s, label, k: root / f"subject {s}" / label / f"sentence {k}"
                                                 / f"s{s}_{label[:2]}_{k}.avi",
    "rml": lambda root, s, label, k: root / f"s{s}" / f"{label[:2]}{k}.avi",
}
PAPER_DATASET = {"rfscnn": "enterface", "emotionalvlan": "enterface",
                 "enhanced_convlstm": "enterface", "mffcnn": "rml", "stc_nlstm": "rml"}


@pytest.mark.parametrize("system", presets.SYSTEMS)
def test_the_full_preset_plans_on_its_paper_s_dataset_layout(system, torchvision_home, tmp_path):
    layout = PAPER_DATASET[system]
    root = tmp_path / "dataset"
    classes = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    for s in range(1, 13):  # 12 subjects: 10 folds can be drawn 4 different ways
        for label in classes:
            path = LAYOUTS[layout](root, s, label, 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(path, np.full((3, 16, 16, 3), 100, np.uint8))
    table = tmp_path / "samples.tsv"
    assert vfer_main(["manifest", "--layout", layout, str(root), "-o", str(table)]) == 0
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text((REPO / "config/config.yaml").read_text())
    result = subprocess.run(
        [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n", "--cores", "2",
         "--configfile", str(REPO / f"config/methods/{system}.yaml"),
         "--config", f"samples={table}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "evaluate" in result.stdout and "train" in result.stdout


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """The tiny workflow's generated clips (tests/tiny.py), shared by the preset runs, with a
    predefined split: subjects S01 and S02 train, S03 validates, S04 is tested (one fold)."""
    import pandas as pd

    from tests.tiny import prepare

    data = prepare(tmp_path_factory.mktemp("tiny")) / "data"
    table = pd.read_csv(data / "samples.tsv", sep="\t", dtype=str)
    table["split"] = table["subject"].map({"S01": "train", "S02": "train", "S03": "val",
                                           "S04": "test"})
    table.to_csv(data / "samples.tsv", sep="\t", index=False)
    return data


#: Training steps of every stream and network in the tiny runs: the test checks that the whole
#: small preset runs (every input kind, backbone, temporal model, fusion and classifier) and
#: writes every experiment's metrics; the preset's own schedule runs in `make presets`.
TINY_STEPS = 6


def short_training(system: str) -> dict:
    """Overrides that cut every stream's and network's training to TINY_STEPS."""
    config = merged(*presets.preset_files(system))
    return {section: {name: {"steps": TINY_STEPS, "eval_every": TINY_STEPS // 2}
                      for name in config[section]}
            for section in ("streams", "networks") if section in config}


@pytest.mark.workflow
@pytest.mark.parametrize("system", presets.SYSTEMS)
def test_the_small_preset_runs_end_to_end_on_the_tiny_dataset(system, tiny_data, tmp_path):
    """The small variant as `make presets` runs it, with TINY_STEPS of training, on the tiny
    dataset's two classes and four subjects, split into training, validation and test
    subjects (one fold, so that each network trains once): every experiment of the preset
    gets its metrics."""
    overrides = tmp_path / "tiny.yaml"
    overrides.write_text(yaml.safe_dump({
        "samples": str(tiny_data / "samples.tsv"), "classes": ["happiness", "surprise"],
        "protocol": {"name": "split"}, **short_training(system)}))
    seconds = presets.run(system, tiny_data / "samples.tsv", tmp_path / "run", 2,
                          ["--configfile", *map(str, presets.preset_files(system)),
                           str(overrides)])
    experiments = [e["name"] for e in merged(*presets.preset_files(system))["experiments"]]
    for name in experiments:
        metrics = tmp_path / "run/results/experiments" / name / "metrics.json"
        assert metrics.exists(), f"{system}: {name} has no metrics ({seconds:.0f} s)"
    markdown = presets.table(system, tmp_path / "run", seconds)
    assert "not run" not in markdown and markdown.count("\n| ") >= 2


def test_make_presets_goes_on_after_a_failing_system_and_says_which(tmp_path, monkeypatch, capsys):
    samples = tmp_path / "samples.tsv"
    samples.write_text("video_id\tsubject\tlabel\tpath\n")

    def run(system, samples, workdir, cores, extra=()):
        if system == "mffcnn":
            raise RuntimeError("preset mffcnn failed:\nboom")
        return 60.0

    monkeypatch.setattr(presets, "run", run)
    out = tmp_path / "presets.md"
    code = presets.main(["rfscnn", "mffcnn", "stc_nlstm", "--samples", str(samples),
                         "--workdir", str(tmp_path / "runs"), "-o", str(out)])
    assert code == 1
    text = out.read_text()
    assert "## rfscnn" in text and "## stc_nlstm" in text and "1.0 min" in text
    assert "## mffcnn\n\nFailed" in text
    assert "mffcnn failed" in capsys.readouterr().err
