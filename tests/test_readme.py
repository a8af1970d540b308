"""Every shell command of README.md runs on the tiny dataset, so that the README cannot drift.

Commands are the lines of the fenced blocks labelled ``bash``, ``sh`` or ``shell`` (a line
ending in a backslash continues on the next; ``#`` starts a comment). Blocks labelled with one
of TEXT_LABELS hold no commands; a block without a label, or with another one, fails the test.
The commands run in README order, in one copy of the finished tiny run (tests/tiny.py: its
``config/config.yaml`` is the tiny config), which also holds ``.venv`` (a link to the running
environment) and links to the repository's files that it lacks (``Makefile``,
``profiles``, ...), with these rules:

=============================================  ===============================================
command                                        how it runs
=============================================  ===============================================
``make <targets>``                             ``make -n <targets>``: every target exists
                                               and its recipe expands (the copy links the
                                               repository's files that it lacks, the Makefile
                                               among them)
``snakemake``, ``.venv/bin/snakemake``         with ``-s <repository>/Snakefile`` (the copy has
                                               no Snakefile) and ``--cores 2`` for
                                               ``--cores all``; first as a dry run (``-n``),
                                               which must succeed; then as written, unless that
                                               dry run trains a model (minutes on the tiny
                                               data, already run by the workflow tests): then
                                               the dry run is the check
``vfer``, ``python -m vfer`` (bare or under    as written
``.venv/bin/``), ``cp``
a path in DATASETS                             replaced by the tiny clips in that layout
anything else                                  fails: add a rule here first
=============================================  ===============================================

Every command must exit with status 0.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.workflow
COMMAND_LABELS = {"bash", "sh", "shell"}
TEXT_LABELS = {"text", "yaml", "json", "python", "tsv", "csv", "markdown"}
VENV_BIN = Path(sys.executable).parent
#: eNTERFACE'05 file names: subject <k>/<emotion>/sentence <n>/s<k>_<code>_<n>.avi
ENTERFACE_CODES = {"anger": "an", "disgust": "di", "fear": "fe", "happiness": "ha",
                   "sadness": "sa", "surprise": "su"}


def fenced_blocks(text: str) -> list[tuple[str, list[str], int]]:
    """(label, lines, line number of the opening fence) of every fenced block."""
    blocks, label, lines, start = [], None, [], 0
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^```(.*)$", line)
        if fence and label is None:
            label, lines, start = fence[1].strip(), [], number
        elif fence:
            blocks.append((label, lines, start))
            label = None
        elif label is not None:
            lines.append(line)
    assert label is None, f"README.md line {start}: a fenced block is not closed"
    return blocks


def commands(text: str) -> list[tuple[int, list[str]]]:
    """(line number, argv) of every shell command of the README's fenced blocks."""
    found = []
    for label, lines, start in fenced_blocks(text):
        assert label, f"README.md line {start}: a fenced block without a label " \
                      f"({sorted(COMMAND_LABELS)} for commands, else one of {sorted(TEXT_LABELS)})"
        if label in TEXT_LABELS:
            continue
        assert label in COMMAND_LABELS, f"README.md line {start}: unknown block label {label!r}"
        joined = "\n".join(lines).replace("\\\n", " ").splitlines()
        for offset, line in enumerate(joined, 1):
            argv = shlex.split(line, comments=True)
            if argv:
                found.append((start + offset, argv))
    return found


def enterface_layout(run: Path, root: Path) -> Path:
    """The tiny clips under eNTERFACE'05's names (the layout `vfer manifest` reads)."""
    samples = pd.read_csv(run / "data/samples.tsv", sep="\t", dtype=str)
    for row in samples.itertuples():
        k = int(re.sub(r"\D", "", row.subject))
        code = ENTERFACE_CODES[row.label]
        clip = root / f"subject {k}" / row.label / "sentence 1" / f"s{k}_{code}_1.avi"
        clip.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / "data" / row.path, clip)
    return root


def planned_jobs(output: str) -> dict[str, int]:
    """Job counts of a dry run's 'Job stats' table (empty when it plans no job)."""
    if "Job stats:" not in output:
        return {}
    table = output.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def two_cores(args: list[str]) -> list[str]:
    """``--cores all`` (or ``--cores=all``) as ``--cores 2``."""
    out = []
    for arg in args:
        if arg == "all" and out[-1:] == ["--cores"]:
            arg = "2"
        out.append("--cores=2" if arg == "--cores=all" else arg)
    return out


def program(argv: list[str]) -> str:
    """What a command runs: make, snakemake, vfer, cp, or its first word if none of them."""
    name = argv[0].removeprefix(".venv/bin/")
    if name == "python" and argv[1:3] == ["-m", "vfer"]:
        return "vfer"
    return name if name in ("make", "snakemake", "vfer", "cp") else argv[0]


@pytest.fixture(scope="module")
def readme_workdir(run, tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, str]]:
    work = tmp_path_factory.mktemp("readme") / "run"
    shutil.copytree(run, work, symlinks=True)
    (work / ".venv").symlink_to(VENV_BIN.parent)
    for entry in REPO.iterdir():
        if not entry.name.startswith(".") and not (work / entry.name).exists():
            (work / entry.name).symlink_to(entry)
    datasets = {"/data/enterface05": str(enterface_layout(run, work.parent / "enterface05"))}
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}
    return work, datasets, env


def test_commands_are_read_from_labelled_blocks_only():
    text = ("```bash\nmake demo   # a comment\n            # its second line\n"
            "snakemake --cores all \\\n  -R flow\n```\n```text\nnot a command\n```\n")
    assert commands(text) == [(2, ["make", "demo"]),
                              (4, ["snakemake", "--cores", "all", "-R", "flow"])]
    with pytest.raises(AssertionError, match="line 1: a fenced block without a label"):
        commands("```\nls\n```\n")
    with pytest.raises(AssertionError, match="line 1: unknown block label 'console'"):
        commands("```console\n$ ls\n```\n")
    assert two_cores(["--cores", "all", "--config", "x=all"]) == ["--cores", "2", "--config",
                                                                   "x=all"]


def test_the_readme_has_commands_of_every_kind():
    found = {program(argv) for _, argv in commands((REPO / "README.md").read_text())}
    assert {"make", "snakemake", "vfer", "cp"} <= found


@pytest.mark.parametrize("line, argv", [pytest.param(n, a, id=f"line{n}") for n, a in
                                        commands((REPO / "README.md").read_text())])
def test_every_readme_command_runs(line, argv, readme_workdir):
    work, datasets, env = readme_workdir
    argv = [datasets.get(a, a) for a in argv]
    where = f"README.md line {line}: {shlex.join(argv)}"
    kind = program(argv)
    if kind == "make":
        result = subprocess.run(["make", "-n", *argv[1:]], cwd=work, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{where}\n{result.stderr}"
        return
    if kind == "snakemake":
        argv = [argv[0], "-s", str(REPO / "Snakefile"), *two_cores(argv[1:])]
        dry = subprocess.run([*argv, "-n"], cwd=work, env=env, capture_output=True, text=True,
                             timeout=600)
        assert dry.returncode == 0, f"{where} (dry run)\n{dry.stderr[-3000:]}"
        if "train" in planned_jobs(dry.stdout + dry.stderr):
            return
    elif kind not in ("vfer", "cp"):
        pytest.fail(f"{where}: no rule says how to run {argv[0]!r} (tests/test_readme.py)")
    result = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"{where}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
