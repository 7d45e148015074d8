"""How a run's summary is shown to a person: the table a terminal or log gets at the end of `score run`, and the
HTML a notebook shows for the `RunSummary` that `run_job` returns (`RunSummary._repr_html_`)."""

from __future__ import annotations

import html
from typing import Any

from jobs.commands.console import versions_text
from jobs.tables.delta import quarantine_table


def summary_html(summary: Any) -> str:
    """The summary as a small HTML table (a notebook's rich display): the status first, then `summary_rows`."""
    status = summary.status if summary.message is None else f"{summary.status}: {summary.message}"
    if summary.error:
        status += f" (exit {summary.exit_code}: {summary.error})"
    rows = summary_rows(summary) if summary.status == "succeeded" else []
    cells = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(name)}</th>"
        f"<td style='text-align:left'>{html.escape(value)}</td></tr>"
        for name, value in rows
    )
    return (
        f"<div><strong>score run {html.escape(summary.job)}</strong>: {html.escape(status)}"
        f"<table style='margin-top:0.5em'>{cells}</table></div>"
    )


def summary_rows(summary: Any) -> list[tuple[str, str]]:
    """The end-of-run summary (a `RunSummary`): what was scored, with what, into which version, how fast, and
    what the contract failed; an empty name continues the row above."""
    rows = f"{summary.rows_in:,} in, {summary.rows_scored:,} scored"
    if summary.rows_quarantined:
        rows += f", {summary.rows_quarantined:,} quarantined"
        if summary.quarantine_version is not None:
            rows += f" ({quarantine_table(summary.table)} v{summary.quarantine_version})"
    span = (
        summary.partitions[0]
        if len(summary.partitions) == 1
        else (f"{summary.partitions[0]} .. {summary.partitions[-1]} ({len(summary.partitions)})")
    )
    if summary.rows_reused:
        rows += f", {summary.rows_reused:,} of them reused (scoring.reuse)"
    shown = [
        ("partitions", span),
        ("rows", rows),
        (
            "model",
            f"{summary.model_uri} (sha256 {summary.model_sha256[:12]})"
            if summary.model_version.startswith("sha256:")
            # a file, not a registered version
            else f"{summary.model_uri} = version {summary.model_version} (sha256 {summary.model_sha256[:12]})",
        ),
        ("table", f"{summary.table} {versions_text(summary.table_versions)}"),
        ("MLflow run", f"{summary.run_id} ({summary.tracking_uri})"),
        ("time", f"{summary.duration_s:.1f} s, {summary.rows_per_s:,.0f} rows/s ({summary.engine})"),
    ]
    if summary.drift is not None:
        shown.append(("drift", _drift_line(summary.drift, summary.table)))
    if summary.challenger is not None:
        whole: dict[str, dict] = next(iter(summary.challenger["agreement"].values()), {})
        figures = "; ".join(
            f"{column} agreement {f['label_agreement']:.4f}"
            + (f", mean |diff| {f['mean_abs_diff']:.4g}" if f.get("mean_abs_diff") is not None else "")
            for column, f in whole.items()
            if f["label_agreement"] is not None
        )
        shown.append(("challenger", f"{summary.challenger['model']['resolved_uri']}: {figures} (score compare)"))
    if summary.cost and summary.cost["total"] is not None:
        cost = summary.cost
        shown.append(
            ("cost", f"{cost['total']:.4g} {cost['currency']}, {cost['per_million_rows']:.4g} per million rows")
        )
    failures = sorted((summary.contract or {}).get("failures", {}).items(), key=lambda kv: -kv[1]["rows"])
    shown += [
        ("" if n else "contract", f"{key}: {failure['rows']:,} rows, e.g. {', '.join(failure['examples'])}")
        for n, (key, failure) in enumerate(failures)
    ]
    return shown


def _drift_line(drift: dict, table: str | None) -> str:
    baseline = drift["baseline"]
    if baseline["version"] is None:
        return "no baseline yet (the first profiled run); profiles stored for the next run to compare with"
    drifted = drift["drifted"]
    against = f"against {baseline['table']} v{baseline['version']}"
    if not drifted:
        return f"no column drifted {against} ({len(drift['columns'])} compared)"
    top = {c["column"]: c for c in drift["columns"]}
    named = ", ".join(f"{c} {top[c]['statistic']:.3f}" for c in drifted[:5])
    return f"{len(drifted)} of {len(drift['columns'])} columns drifted {against}: {named} (score drift {table})"
