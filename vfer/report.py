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


def fold_figure(folds: list[dict], title: str, path) -> None:
    """Save a bar chart of accuracy and UAR per test fold, with their means."""
    names = [str(f["fold"]) for f in folds]
    acc = 100 * np.array([f["accuracy"] for f in folds])
    uar = 100 * np.array([f["uar"] for f in folds])
    x = np.arange(len(folds))
    fig, ax = plt.subplots(figsize=(1.5 + 0.5 * len(folds), 3.2), dpi=120)
    ax.bar(x - 0.2, acc, 0.4, label=f"accuracy (mean {acc.mean():.1f})", color="#3b6ea5")
    ax.bar(x + 0.2, uar, 0.4, label=f"UAR (mean {uar.mean():.1f})", color="#9ab8d8")
    ax.axhline(acc.mean(), color="#3b6ea5", lw=1, ls="--")
    ax.set_xticks(x, names)
    ax.set_xlabel("test fold")
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)


def _fusion_label(settings: dict, streams: list[str]) -> str:
    """How the streams are fused ('-' for a single stream)."""
    fusion = settings["fusion"]
    if len(streams) == 1:
        return "-"
    if fusion == "scores":
        return f"scores ({settings['weights']})"
    return f"{fusion} (select)" if settings.get("select") else fusion


def _classifier_label(settings: dict) -> str:
    """The classifier: 'svc (linear)', 'linear_svc', 'logistic' or the networks' 'softmax'."""
    kind = settings["kind"]
    return f"{kind} ({settings['kernel']})" if kind == "svc" else kind


def _best_members(results: dict[str, dict]) -> dict[str, tuple[str, float]]:
    """For each experiment of several streams: the single-stream experiment of one of its
    streams with the highest mean accuracy (its name and that accuracy)."""
    singles = {n: r for n, r in results.items() if len(r["streams"]) == 1}
    out = {}
    for name, r in results.items():
        members = [n for n, m in singles.items() if len(r["streams"]) > 1
                   and m["streams"][0] in r["streams"]]
        if members:
            best = max(members, key=lambda n: singles[n]["mean"]["accuracy"]["mean"])
            out[name] = (best, 100.0 * singles[best]["mean"]["accuracy"]["mean"])
    return out


#: Accuracy differences (percentage points) below this are ties (float rounding of means).
TIE = 1e-9


def summary_table(results: dict[str, dict]) -> pd.DataFrame:
    """One row per experiment: streams, fusion, folds and mean +- std of each metric (%); for
    a fusion, its best member (the single-stream experiment of one of its streams with the
    highest mean accuracy), that accuracy, the difference and whether the fusion is below it."""
    best = _best_members(results)
    rows = []
    for name, r in results.items():
        row = {"experiment": name, "streams": "+".join(r["streams"]),
               "fusion": _fusion_label(r["settings"], r["streams"]),
               "classifier": _classifier_label(r["settings"]), "folds": len(r["folds"])}
        for k in ("accuracy", "uar", "macro_f1"):
            row[f"{k}_mean"] = 100.0 * r["mean"][k]["mean"]
            row[f"{k}_std"] = 100.0 * r["mean"][k]["std"]
        member, accuracy = best.get(name, ("", np.nan))
        # Two means of the same per-fold accuracies in another order may differ in the last
        # bits: a difference below TIE is a tie, not "below".
        versus = row["accuracy_mean"] - accuracy
        versus = 0.0 if abs(versus) < TIE else versus
        row.update({"best_member": member, "best_member_accuracy": accuracy,
                    "vs_best_member": versus, "below_best_member": bool(versus < 0)})
        rows.append(row)
    return pd.DataFrame(rows)


def _versus(r) -> str:
    """'member 97.50 (+1.67)' for a fusion, with ', below' when it scores less; '' otherwise."""
    if not r.best_member:
        return ""
    flag = ", below" if r.below_best_member else ""
    return f"{r.best_member} {r.best_member_accuracy:.2f} ({r.vs_best_member:+.2f}{flag})"


def summary_markdown(table: pd.DataFrame, failures: pd.DataFrame | None = None,
                     title: str = "vfer results") -> str:
    """The summary as Markdown: mean +- std over folds in percent, each fusion's best member
    stream (flagged when the fusion is below it), then any failed videos."""
    lines = [f"# {title}", "",
             "| experiment | streams | fusion | classifier | folds | accuracy (%) | UAR (%) | "
             "macro F1 (%) | best member: accuracy (fusion - member) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.experiment} | {r.streams} | {r.fusion} | {r.classifier} | {r.folds} | "
                     f"{r.accuracy_mean:.2f} ± {r.accuracy_std:.2f} | {r.uar_mean:.2f} ± {r.uar_std:.2f} | "
                     f"{r.macro_f1_mean:.2f} ± {r.macro_f1_std:.2f} | {_versus(r)} |")
    below = table.loc[table["below_best_member"], "experiment"].tolist()
    if below:
        lines += ["", f"Below their best member stream: {', '.join(below)}."]
    if failures is not None and len(failures):
        lines += ["", f"## Failed videos ({len(failures)}, excluded from every experiment)", "",
                  "| video_id | stage | reason |", "|---|---|---|"]
        lines += [f"| {r.video_id} | {r.stage} | {r.reason} |" for r in failures.itertuples()]
    return "\n".join(lines) + "\n"


def summary_html(table: pd.DataFrame, confusion_png: bytes, confusion_of: str,
                 failures: pd.DataFrame, title: str = "vfer results") -> str:
    """A self-contained HTML page: the summary table (a fusion below its best member stream is
    flagged), one confusion matrix (embedded PNG) and the failed videos. The report shows it
    on its first page."""
    import base64
    import html

    def cell(v, attrs=""):
        return f"<td{attrs}>{html.escape(str(v))}</td>"

    rows = []
    for r in table.itertuples():
        parts = [r.streams] + ([r.fusion] if r.fusion != "-" else []) + [r.classifier]
        name = (f"<td><b>{html.escape(r.experiment)}</b><br><small>"
                f"{' &middot; '.join(html.escape(p) for p in parts)}</small></td>")
        versus = cell(_versus(r), ' class="vfer-below"' if r.below_best_member else "")
        rows.append("<tr>" + name + "".join(cell(v) for v in (
            f"{r.accuracy_mean:.1f} ± {r.accuracy_std:.1f}", f"{r.uar_mean:.1f} ± {r.uar_std:.1f}",
            f"{r.macro_f1_mean:.1f} ± {r.macro_f1_std:.1f}")) + versus + "</tr>")
    below = table.loc[table["below_best_member"], "experiment"].tolist()
    warning = (f'<p class="vfer-below">Below their best member stream: '
               f'{html.escape(", ".join(below))}.</p>' if below else "")
    failed = "<p>No video failed.</p>"
    if len(failures):
        failed = ("<table><tr><th>video</th><th>stage</th><th>reason</th></tr>" + "".join(
            "<tr>" + cell(f.video_id) + cell(f.stage) + cell(f.reason) + "</tr>"
            for f in failures.itertuples()) + "</table>")
    image = base64.b64encode(confusion_png).decode()
    low, high = int(table["folds"].min()), int(table["folds"].max())
    folds = f"{high}" if low == high else f"{low} to {high} (each experiment's count: summary.md)"
    return f"""<div class="vfer-summary">
<style>.vfer-summary table {{border-collapse: collapse; font-size: 12px; margin: 0}}
.vfer-summary td, .vfer-summary th {{border: 1px solid #999; padding: 2px 6px; text-align: left;
 white-space: nowrap}}
.vfer-summary .vfer-below {{background: #f8d7da; color: #842029; font-weight: bold}}</style>
<h2>{html.escape(title)}</h2>
<p>Mean &plusmn; standard deviation over {folds} subject-independent test
folds, in percent. A fusion is compared with its best member: the single-stream experiment of
one of its streams with the highest accuracy.</p>
{warning}
<table id="vfer-summary-table"><tr><th>experiment (streams &middot; fusion &middot; classifier)</th>
<th>accuracy</th><th>UAR</th><th>macro F1</th><th>best member (fusion &minus; member)</th></tr>
{"".join(rows)}
</table>
<h3>Confusion matrix: {html.escape(confusion_of)}</h3>
<img id="vfer-confusion" alt="confusion matrix of {html.escape(confusion_of)}" style="max-width: 480px"
 src="data:image/png;base64,{image}"/>
<h3>Failed videos</h3>
{failed}
</div>
"""


def _tile(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    s = size / max(h, w)
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    out = np.full((size, size, 3), 255, np.uint8)
    out[:small.shape[0], :small.shape[1]] = small
    return out


def motion_preview(faces_path: str, segments_path: str, flow_path: str | None,
                   dynamic_paths: dict[str, str], videos: int = 3, per_kind: int = 4,
                   tile: int = 64) -> np.ndarray:
    """One row per video (the first ``videos`` of a shard) showing its segment with the most
    motion (the first one without flow): frames, colour-coded flows (hue = direction,
    brightness = magnitude, 99th percentile = full) and that segment's dynamic images."""
    from contextlib import ExitStack

    import cv2

    from vfer.flow import flow_to_hsv_rgb
    from vfer.store import DynamicFile, FacesFile, FlowFile, SegmentsFile

    rows = []
    with ExitStack() as stack:
        faces = stack.enter_context(FacesFile(faces_path))
        segs = stack.enter_context(SegmentsFile(segments_path))
        flow = stack.enter_context(FlowFile(flow_path)) if flow_path else None
        dynamic = {k: stack.enter_context(DynamicFile(p)) for k, p in dynamic_paths.items()}
        for vid in segs.videos()[:videos]:
            segments = segs.segment_index(vid)
            chosen, tiles = 0, []
            if flow is not None:
                images, seg_pairs = flow.images(vid), flow.segment_pairs(vid)
                chosen = int(np.argmax(images[..., 2][seg_pairs].mean(axis=(1, 2, 3))))
                picks = seg_pairs[chosen][np.linspace(0, seg_pairs.shape[1] - 1, per_kind).round().astype(int)]
                flows = flow.flows(vid, picks)
                top = max(float(np.percentile(np.linalg.norm(flows, axis=-1), 99)), 1e-6)
                flow_tiles = [_tile(flow_to_hsv_rgb(f, top), tile) for f in flows]
            seg = segments[chosen]
            picks = seg[np.linspace(0, len(seg) - 1, per_kind).round().astype(int)]
            tiles += [_tile(im, tile) for im in faces.frames(vid, picks)]
            if flow is not None:
                tiles += flow_tiles
            for f in dynamic.values():
                tiles.append(_tile(f.images(vid, f.segment_images(vid)[chosen])[0], tile))
            row = np.concatenate(tiles, axis=1)
            label = np.full((14, row.shape[1], 3), 255, np.uint8)
            cv2.putText(label, f"{vid} (segment {chosen})", (2, 11), cv2.FONT_HERSHEY_SIMPLEX,
                        0.38, (0, 0, 0), 1, cv2.LINE_AA)
            rows.append(np.concatenate([label, row], axis=0))
    if not rows:
        return np.full((20, 200, 3), 255, np.uint8)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)


def summarise(metrics: dict[str, str], confusion: dict[str, str],
              failures: list[str]) -> dict:
    """The summary from the experiments' ``metrics.json`` and ``confusion.png`` files (by
    experiment) and the shards' failure tables: {"table", "failures", "markdown", "html"};
    the page shows the best experiment's confusion matrix."""
    import json

    results = {}
    for name, path in metrics.items():
        with open(path) as fh:
            results[name] = json.load(fh)
    failed = pd.concat([pd.DataFrame(columns=["video_id", "path", "stage", "reason"])]
                       + [pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
                          for p in failures], ignore_index=True)
    table = summary_table(results)
    best = table["experiment"][int(table["accuracy_mean"].to_numpy().argmax())]
    with open(confusion[best], "rb") as fh:
        page = summary_html(table, fh.read(), best, failed)
    return {"table": table, "failures": failed, "markdown": summary_markdown(table, failed),
            "html": page}


def overview_html(summary: str | None, missing: list[str], problems: list[str]) -> str:
    """The report's first page: the summary of the experiments that have results (or a note
    that none has), then what the run has not made (``missing``) and why, where known
    (``problems``: failed jobs, a protocol that cannot split the data)."""
    import html

    def items(lines):
        return "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"

    parts = [summary or '<div class="vfer-summary"><h2>vfer results</h2>'
                        '<p id="vfer-no-results">No experiment has results yet.</p></div>']
    if missing:
        parts += [f'<h3>Missing ({len(missing)})</h3><p>The report shows what exists; the run '
                  f'has not made these:</p><div id="vfer-missing">{items(missing)}</div>']
    else:
        parts.append('<p id="vfer-complete">Nothing is missing: every output of the run '
                     'exists.</p>')
    if problems:
        parts += [f'<h3>Why</h3><div id="vfer-problems">{items(problems)}</div>']
    return "\n".join(parts) + "\n"
