"""The conventions a Snakemake workflow is judged by: `snakemake --lint` clean, rules formatted
by snakefmt, a pinned conda environment per rule group (pins equal to requirements.lock),
outputs named once, no torch, MediaPipe or TensorFlow at parse time, and a documented CLI."""

from __future__ import annotations

import argparse
import ast
import importlib.metadata as md
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.conftest import REPO
from tests.tiny import CONFIG, SNAKEMAKE, command, write_config

BIN = Path(sys.executable).parent
RULE_FILES = [REPO / "Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]
HEAVY = ("torch", "mediapipe", "tensorflow")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny workflow's config and a samples table of empty video files: enough to parse the
    workflow and build its DAG (neither reads a video)."""
    workdir = tmp_path_factory.mktemp("conventions")
    (workdir / "data/videos").mkdir(parents=True)
    rows = ["video_id\tpath\tlabel\tsubject"]
    for i in range(8):
        path = f"videos/v{i}.avi"
        (workdir / "data" / path).touch()
        rows.append(f"v{i}\t{path}\t{CONFIG['classes'][i % 2]}\tS{i // 2}")
    (workdir / "data/samples.tsv").write_text("\n".join(rows) + "\n")
    write_config(workdir, CONFIG)
    return workdir


def test_snakemake_lint_is_clean(tiny):
    result = subprocess.run(command(tiny, "--lint"), capture_output=True, text=True,
                            timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Lints for" not in output, output[-4000:]
    assert "your workflow is in a good condition" in output


def test_rules_are_formatted_by_snakefmt():
    result = subprocess.run([str(BIN / "snakefmt"), "--check", *map(str, RULE_FILES)],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_parsing_the_workflow_imports_no_torch_mediapipe_or_tensorflow(tiny):
    """`python -X importtime` lists every module the dry run imports (parse and DAG)."""
    result = subprocess.run([sys.executable, "-X", "importtime", SNAKEMAKE,
                             *command(tiny, "-n", "--quiet", "rules")[1:]],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    modules = {m[1] for m in re.finditer(r"^import time:.*\|\s*(\S+)$", result.stderr, re.M)}
    assert {"snakemake.workflow", "vfer.config", "vfer.samples", "vfer.folds"} <= modules
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"parsing the workflow imports {heavy}"
    assert "train" in result.stdout  # the plan was built


# --- conda environments ------------------------------------------------------------------
def lock_pins(path: Path = REPO / "requirements.lock") -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def env_pins(path: Path) -> dict[str, str]:
    """The pip pins of a conda environment file, whose conda part is pip and the Python that
    pyproject.toml requires."""
    env = yaml.safe_load(path.read_text())
    assert env["channels"][0] == "conda-forge", path
    conda = sorted(d for d in env["dependencies"] if isinstance(d, str))
    assert conda[0] == "pip" and conda[1].startswith("python=") and len(conda) == 2, path
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(conda[1].removeprefix("python=")), (path, requires)
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    pins = {}
    for spec in pip:
        req = Requirement(spec)
        (specifier,) = req.specifier
        assert specifier.operator == "==", (path, spec)
        pins[canonicalize_name(req.name)] = specifier.version
    return pins


ENVS = sorted((REPO / "envs").glob("*.yaml"))


@pytest.mark.parametrize("env", ENVS, ids=[p.stem for p in ENVS])
def test_environment_pins_equal_requirements_lock(env):
    lock, pins = lock_pins(), env_pins(env)
    assert pins
    differ = {n: (v, lock.get(n)) for n, v in pins.items() if lock.get(n) != v}
    assert not differ, f"{env.name}: (env, requirements.lock) {differ}"


def dependencies(name: str) -> set[str]:
    """The installed distribution's requirements that apply here (no extras)."""
    found = set()
    for spec in md.requires(name) or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            found.add(canonicalize_name(req.name))
    return found


@pytest.mark.parametrize("env", ENVS, ids=[p.stem for p in ENVS])
def test_environment_pins_every_dependency_of_its_packages(env):
    """pip would otherwise pick the newest release of an unlisted dependency."""
    pins = env_pins(env)
    missing = {f"{d} (for {n})" for n in pins for d in dependencies(n) if d not in pins}
    assert not missing, f"{env.name} lacks {sorted(missing)}"


def rule_blocks() -> dict[str, tuple[Path, str]]:
    """rule name -> (its file, its text), from the formatted rule files."""
    blocks = {}
    for path in RULE_FILES:
        text = path.read_text()
        starts = [(m.start(), m[1]) for m in re.finditer(r"^rule (\w+):", text, re.M)]
        for (start, name), (end, _) in zip(starts, starts[1:] + [(len(text), "")]):
            blocks[name] = (path, text[start:end])
    return blocks


def test_every_rule_that_runs_code_has_a_conda_environment_that_exists():
    used = set()
    for name, (path, block) in rule_blocks().items():
        if "script:" not in block:
            assert name == "all", f"rule {name} runs no script: check its environment"
            continue
        env = re.search(r'^    conda:\n        "([^"]+)"', block, re.M)
        assert env, f"rule {name} ({path.name}) has no conda: directive"
        target = (path.parent / env[1]).resolve()
        assert target.parent == REPO / "envs" and target.exists(), (name, env[1])
        used.add(target)
    assert used == set(ENVS) - {REPO / "envs/vfer.yaml"}  # vfer.yaml runs snakemake itself


def module_imports(path: Path) -> set[str]:
    """Modules imported by the top-level statements of a file (not inside functions)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def third_party_imports(script: Path) -> set[str]:
    """Top-level packages a script needs once its vfer modules are loaded (module-level imports,
    followed through vfer)."""
    seen, todo, found = set(), [script], set()
    while todo:
        for name in module_imports(todo.pop()):
            top = name.split(".")[0]
            if top != "vfer":
                found.add(top)
                continue
            for candidate in (REPO / f"{name.replace('.', '/')}.py",
                              REPO / name.replace(".", "/") / "__init__.py"):
                if candidate.exists() and candidate not in seen:
                    seen.add(candidate)
                    todo.append(candidate)
    return found - set(sys.stdlib_module_names) - {"snakemake"}


def test_each_environment_holds_what_its_rules_scripts_import():
    distributions = md.packages_distributions()
    for name, (path, block) in rule_blocks().items():
        script = re.search(r'^    script:\n        "([^"]+)"', block, re.M)
        env = re.search(r'^    conda:\n        "([^"]+)"', block, re.M)
        if not script:
            continue
        pins = env_pins(path.parent / env[1])
        needed = {canonicalize_name(d) for m in third_party_imports(path.parent / script[1])
                  for d in distributions.get(m, [m])}
        assert needed and needed <= set(pins), f"rule {name}: {env[1]} lacks {needed - set(pins)}"


def test_each_output_pattern_is_written_once():
    """Consumers name an upstream output through rules.<name>.output or a path helper of
    common.smk that reads it, never by repeating the path."""
    literals = [m[1] for path in RULE_FILES
                for m in re.finditer(r'"(results/[^"]*)"', path.read_text())]
    repeated = sorted({p for p in literals if literals.count(p) > 1})
    assert literals and not repeated, repeated


def test_rule_files_hold_rules_and_common_smk_the_functions():
    for path in RULE_FILES:
        text = path.read_text()
        if path.name == "common.smk":
            assert "def " in text and not re.search(r"^rule ", text, re.M)
        else:
            assert not re.search(r"^def ", text, re.M), path.name


# --- command line ------------------------------------------------------------------------
def test_vfer_version(capsys):
    from vfer import __version__
    from vfer.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"vfer {__version__}\n"


def parsers(monkeypatch) -> list[argparse.ArgumentParser]:
    """vfer's parser and its subcommands' parsers, caught where main() would parse."""
    from vfer.cli import main

    caught = []

    def catch(self, *args, **kwargs):
        caught.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(SystemExit):
        main([])
    (top,) = caught
    subs = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    return [top, *(p for s in subs for p in s.choices.values())]


def test_every_option_of_every_subcommand_has_help(monkeypatch):
    found = parsers(monkeypatch)
    assert {p.prog for p in found} >= {"vfer", "vfer demo-data", "vfer manifest", "vfer check",
                                       "vfer status"}
    missing = [f"{p.prog} {a.dest}" for p in found for a in p._actions
               if not isinstance(a, argparse._SubParsersAction) and not (a.help or "").strip()]
    assert not missing, f"options without help: {missing}"
