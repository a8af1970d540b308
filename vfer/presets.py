"""The published systems as presets: run their small variants and put the papers' rows beside
vfer's (``make presets`` -> results/presets.md).

A preset is ``config/methods/<system>.yaml`` (full scale, as the paper describes it) and
``config/methods/<system>-small.yaml`` (the keys that shrink it to train on 2 CPU cores),
merged in that order as Snakemake merges several --configfile (they replace config/config.yaml). Each experiment names the
rows of the paper's tables it reproduces (``reported``); the paper's figures come from
docs/methods/reported.yaml.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = ("rfscnn", "mffcnn", "emotionalvlan", "stc_nlstm", "enhanced_convlstm")
REPORTED = REPO / "docs" / "methods" / "reported.yaml"


def preset_files(system: str, small: bool = True) -> list[Path]:
    files = [REPO / "config" / "methods" / f"{system}.yaml"]
    if small:
        files.append(REPO / "config" / "methods" / f"{system}-small.yaml")
    return files


def reported_rows(system: str) -> list[dict]:
    """The paper's rows of ``system`` (docs/methods/reported.yaml), in the file's order."""
    rows = yaml.safe_load(REPORTED.read_text())
    return [r for r in rows if r["system"] == system]


def run(system: str, samples: Path, workdir: Path, cores: int, extra: list[str] = ()) -> float:
    """Run a small preset in ``workdir`` on ``samples``, one GPU job at a time where torch sees
    CUDA; returns the wall seconds."""
    from vfer.runtime import select_device

    workdir.mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"),
               "-d", str(workdir), "--cores", str(cores), "--configfile",
               *map(str, preset_files(system)), "--config", f"samples={samples.resolve()}",
               *extra]
    if select_device("auto").type == "cuda":
        command += ["--resources", "gpu=1"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"preset {system} failed:\n{result.stderr[-4000:]}")
    return time.perf_counter() - start


def _accuracy(workdir: Path, name: str | None) -> str:
    """'mean ± std' (%) of an experiment's accuracy over its folds, or 'not run'."""
    metrics = workdir / "results" / "experiments" / str(name) / "metrics.json"
    if not name or not metrics.exists():
        return "not run"
    m = json.loads(metrics.read_text())["mean"]["accuracy"]
    return f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}"


def table(system: str, workdir: Path, seconds: float | None) -> str:
    """Markdown: every row of the paper's tables beside vfer's experiment that reproduces it,
    then the preset's experiments that reproduce no printed row (e.g. an ablation the paper
    describes without a number)."""
    config = yaml.safe_load(preset_files(system, small=False)[0].read_text())
    linked = {(r["table"], r["row"]): e["name"] for e in config["experiments"]
              for r in e.get("reported", [])}
    rows = reported_rows(system)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    head = ["table", "row", *[f"paper: {d}" for d in datasets], "vfer experiment",
            "vfer: demo, small (%)"]
    lines = [f"## {system}", "",
             f"Small variant on the demo dataset"
             + (f", {seconds / 60:.1f} min on this machine" if seconds is not None else "")
             + f"; pipeline and deviations: docs/methods/{system}.md.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in dict.fromkeys((r["table"], r["row"]) for r in rows):
        paper = {r["dataset"]: r["accuracy"] for r in rows if (r["table"], r["row"]) == key}
        name = linked.get(key)
        cells = [key[0], key[1], *[f"{paper[d]:.2f}" if d in paper else "" for d in datasets],
                 name or "(none)", _accuracy(workdir, name)]
        lines.append("| " + " | ".join(cells) + " |")
    for e in config["experiments"]:
        if e["name"] not in linked.values():
            cells = ["-", "(no printed row)", *["not reported"] * len(datasets), e["name"],
                     _accuracy(workdir, e["name"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vfer.presets", description=__doc__)
    parser.add_argument("systems", nargs="*", default=list(SYSTEMS),
                        help=f"presets to run, of {', '.join(SYSTEMS)} (default: all five)")
    parser.add_argument("--samples", default="data/demo/samples.tsv",
                        help="samples table to run them on (default: the demo's)")
    parser.add_argument("--workdir", default="results/presets",
                        help="folder of the runs, one sub-folder per preset")
    parser.add_argument("--cores", type=int, default=2, help="cores for snakemake")
    parser.add_argument("-o", "--output", default="results/presets.md",
                        help="the markdown table to write")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; choose from {list(SYSTEMS)}")
    samples = Path(args.samples)
    if not samples.is_file():
        print(f"vfer presets: error: samples table not found: {samples} (make demo writes the "
              "demo's)", file=sys.stderr)
        return 2
    parts = ["# The published systems: the papers' rows beside vfer's", "",
             "Paper figures are as printed (docs/methods/reported.yaml); vfer's are the mean "
             "and standard deviation over subject-independent folds of the small variant on "
             "the generated demo dataset, which is neither the papers' datasets nor their "
             "scale: read them as a check that each system runs end to end, not as a "
             "reproduction of the numbers.", ""]
    output, failed = Path(args.output), []
    output.parent.mkdir(parents=True, exist_ok=True)
    for system in args.systems:  # the table is rewritten after each system, and a failure
        workdir = Path(args.workdir) / system  # does not stop the others
        try:
            seconds = run(system, samples, workdir, args.cores)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            failed.append(system)
            parts.append(f"## {system}\n\nFailed; the error is in {workdir}/logs/ and "
                         f"{workdir}/.snakemake/log/.\n")
        else:
            print(f"{system}: {seconds / 60:.1f} min")
            parts.append(table(system, workdir, seconds))
        output.write_text("\n".join(parts))
    print(f"wrote {output}")
    if failed:
        print(f"vfer presets: error: {', '.join(failed)} failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
