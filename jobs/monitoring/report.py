"""A run's drift for people: one self-contained HTML page (every column, the drifted ones first) and a PNG of the
most drifted columns' distributions, baseline against current, drawn from their profiles."""

from __future__ import annotations

import html
import io
from typing import Any

import numpy as np

from jobs.monitoring.drift import OTHER, category_fractions
from jobs.monitoring.profiles import NUMBER, ColumnProfile

SHOWN_COLUMNS = 4  # columns in the PNG
SHOWN_VALUES = 12  # a category column's values in its chart (the most common in either profile)


def to_html(drift: dict[str, Any], title: str = "Drift") -> str:
    """The page of one drift result (`RunSummary.drift`, or `score drift --json`'s)."""
    esc = html.escape
    baseline = drift["baseline"]
    columns = drift["columns"]
    against = (
        f"{esc(baseline['table'])} version {baseline['version']}" if baseline["version"] is not None else "nothing"
    )
    verdict = (
        "no baseline: the first profiled run of the table"
        if baseline["version"] is None
        else f"{len(drift['drifted'])} of {len(columns)} columns drifted"
    )
    rows = []
    for c in columns:
        status = "drift" if c["drifted"] else "ok"
        nulls = c["null_fraction"]
        rows.append(
            f"<tr class='{status}'><td>{esc(c['column'])}</td><td>{esc(c['method'])}</td>"
            f"<td class='n'>{_fixed(c['statistic'])}</td><td class='n'>{c['threshold']:g}</td>"
            f"<td class='n'>{_fixed(c['psi'])}</td><td class='n'>{nulls[0]:.2%} &rarr; {nulls[1]:.2%}</td>"
            f"<td>{'drifted' if c['drifted'] else ''}</td></tr>"
        )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1em; color: #222; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 3px 6px; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.drift td {{ background: #fde8e8; }}
</style></head><body>
<h2>{esc(title)}: {esc(verdict)}</h2>
<p>Against {against}. Numbers: Wasserstein distance normed by the baseline's standard deviation; categories:
Jensen-Shannon distance (natural log). A column drifts when its statistic reaches its threshold. PSI alongside.</p>
<table><tr><th>column</th><th>method</th><th>statistic</th><th>threshold</th><th>PSI</th><th>null fraction</th>
<th></th></tr>
{"".join(rows)}
</table></body></html>
"""


def _fixed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def most_drifted_png(
    drift: dict[str, Any], baseline: dict[str, ColumnProfile], current: dict[str, ColumnProfile]
) -> bytes | None:
    """The distributions of the SHOWN_COLUMNS most drifted columns (None when none drifted: drawing takes matplotlib
    a second, 6% of a 16 s run, measured): numbers as the two cumulative distributions, categories as the shares
    of their most common values."""
    drifted = set(drift["drifted"])
    shown = [c["column"] for c in drift["columns"] if c["column"] in drifted and c["column"] in baseline]
    shown = shown[:SHOWN_COLUMNS]
    if not shown:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # 0.5 s: only drawing needs it
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2 * len(shown), 3.2), dpi=90, layout="constrained")
    by_column = {c["column"]: c for c in drift["columns"]}
    for axes, column in zip(figure.subplots(1, len(shown), squeeze=False)[0], shown):
        before, now = baseline[column], current[column]
        if before.kind == NUMBER:
            ranks = (np.arange(200) + 0.5) / 200
            axes.plot(before.quantiles(200), ranks, color="#222222", label="baseline")
            axes.plot(now.quantiles(200), ranks, color="#1f77b4", label="current")
            axes.set_ylabel("cumulative share")
        else:
            shares = category_fractions(before, now)
            names = sorted(before.values.keys() | now.values.keys()) + [OTHER]
            top = np.argsort(-(shares[0] + shares[1]))[:SHOWN_VALUES]
            x = np.arange(len(top))
            axes.bar(x - 0.2, shares[0][top], 0.4, color="#222222", label="baseline")
            axes.bar(x + 0.2, shares[1][top], 0.4, color="#1f77b4", label="current")
            axes.set_xticks(x, [str(names[i])[:12] for i in top], rotation=45, ha="right", fontsize=7)
            axes.set_ylabel("share of rows")
        entry = by_column[column]
        statistic = "n/a" if entry["statistic"] is None else f"{entry['statistic']:.3f}"
        axes.set_title(f"{column}\n{entry['method']} {statistic}", fontsize=9)
        axes.legend(fontsize=7)
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
