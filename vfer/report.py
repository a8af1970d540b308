"""Tables and figures: the summary table across experiments and confusion-matrix plots."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def confusion_figure(percent: np.ndarray, classes: list[str], title: str, path: str) -> None:
    """Save a row-normalised confusion matrix (percent, annotated) as PNG."""
    percent = np.asarray(percent)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n), dpi=120)
    ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{percent[i, j]:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if percent[i, j] > 60 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (row %)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)


def summary_table(results: dict[str, dict]) -> pd.DataFrame:
    """One row per experiment: streams, fusion, folds and mean +- std of each metric (%)."""
    rows = []
    for name, r in results.items():
        row = {"experiment": name, "streams": "+".join(r["streams"]), "fusion": r["fusion"],
               "folds": len(r["folds"])}
        for k in ("accuracy", "uar", "macro_f1"):
            row[f"{k}_mean"] = 100.0 * r["mean"][k]["mean"]
            row[f"{k}_std"] = 100.0 * r["mean"][k]["std"]
        rows.append(row)
    return pd.DataFrame(rows)


def summary_markdown(table: pd.DataFrame, failures: pd.DataFrame | None = None,
                     title: str = "vfer results") -> str:
    """The summary as Markdown: mean +- std over folds in percent, then any failed videos."""
    lines = [f"# {title}", "",
             "| experiment | streams | fusion | folds | accuracy (%) | UAR (%) | macro F1 (%) |",
             "|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.experiment} | {r.streams} | {r.fusion} | {r.folds} | "
                     f"{r.accuracy_mean:.2f} ± {r.accuracy_std:.2f} | {r.uar_mean:.2f} ± {r.uar_std:.2f} | "
                     f"{r.macro_f1_mean:.2f} ± {r.macro_f1_std:.2f} |")
    if failures is not None and len(failures):
        lines += ["", f"## Failed videos ({len(failures)}, excluded from every experiment)", "",
                  "| video_id | stage | reason |", "|---|---|---|"]
        lines += [f"| {r.video_id} | {r.stage} | {r.reason} |" for r in failures.itertuples()]
    return "\n".join(lines) + "\n"
