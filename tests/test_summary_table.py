"""The summary table: each fusion beside its best member stream, flagged when below it."""

import pandas as pd

from vfer import report


def result(streams, accuracy, fusion="concat", weights="mean", select=False, kind="svc"):
    metric = {"mean": accuracy, "std": 0.01}
    return {"streams": streams, "folds": [{}] * 5,
            "settings": {"fusion": fusion, "weights": weights, "select": select, "kind": kind,
                         "kernel": "linear"},
            "mean": {"accuracy": metric, "uar": metric, "macro_f1": metric}}


RESULTS = {
    "a": result(["a"], 0.90), "b": result(["b"], 0.95), "b_softmax": result(["b"], 0.97, kind="softmax"),
    "c": result(["c"], 0.99),
    "ab": result(["a", "b"], 0.96, select=True),
    "ab_scores": result(["a", "b"], 0.95, fusion="scores", weights="stacking"),
    "ax": result(["a", "x"], 0.80),  # x has no experiment of its own
    "xy": result(["x", "y"], 0.70),
}


def test_each_fusion_is_shown_beside_its_best_member():
    table = report.summary_table(RESULTS).set_index("experiment")
    assert table.loc["ab", "best_member"] == "b_softmax"  # the best of a's and b's experiments
    assert table.loc["ab", "best_member_accuracy"] == 97.0
    assert round(table.loc["ab", "vs_best_member"], 6) == -1.0
    assert table.loc["ab", "below_best_member"] and table.loc["ab_scores", "below_best_member"]
    assert table.loc["ax", "best_member"] == "a" and table.loc["ax", "below_best_member"]
    assert table.loc["xy", "best_member"] == "" and not table.loc["xy", "below_best_member"]
    assert table.loc["c", "best_member"] == "" and not table.loc["c", "below_best_member"]
    assert table.loc["ab", "fusion"] == "concat (select)"
    assert table.loc["ab_scores", "fusion"] == "scores (stacking)"
    assert table.loc["c", "fusion"] == "-" and table.loc["c", "classifier"] == "svc (linear)"
    assert table.loc["b_softmax", "classifier"] == "softmax"
    above = report.summary_table({**RESULTS, "ab": result(["a", "b"], 0.98)})
    assert not above.set_index("experiment").loc["ab", "below_best_member"]


def test_markdown_and_html_flag_the_fusions_below_their_best_member():
    table = report.summary_table(RESULTS)
    markdown = report.summary_markdown(table)
    assert "| ab | a+b | concat (select) | svc (linear) | 5 | 96.00 ± 1.00 |" in markdown
    assert "| b_softmax 97.00 (-1.00, below) |" in markdown
    assert "Below their best member stream: ab, ab_scores, ax." in markdown
    assert ("| c | c | - | svc (linear) | 5 | 99.00 ± 1.00 | 99.00 ± 1.00 | 99.00 ± 1.00 |  |"
            in markdown)
    assert "| b_softmax | b | - | softmax | 5 |" in markdown
    html = report.summary_html(table, b"png", "c", pd.DataFrame())
    assert html.count('<td class="vfer-below">') == 3
    assert '<td class="vfer-below">b_softmax 97.00 (-1.00, below)</td>' in html
    assert "Below their best member stream: ab, ab_scores, ax." in html
    fine = report.summary_table({"a": RESULTS["a"], "ab": result(["a", "b"], 0.95)})
    assert "Below" not in report.summary_markdown(fine)
    assert "vfer-below\">" not in report.summary_html(fine, b"png", "a", pd.DataFrame())


def test_a_fusion_that_ties_its_best_member_is_not_below_it():
    """Equal per-fold means computed from other fold accuracies differ in the last bits."""
    a, ab = sum([0.0, 0.3, 0.5, 0.9, 1.0]) / 5, sum([0.2, 0.5, 0.6, 0.7, 0.7]) / 5
    assert a != ab  # 0.54 both, one ulp apart
    table = report.summary_table({"a": result(["a"], a), "ab": result(["a", "b"], ab)})
    row = table.set_index("experiment").loc["ab"]
    assert row["vs_best_member"] == 0.0 and not row["below_best_member"]
    assert "a 54.00 (+0.00)" in report.summary_markdown(table)
