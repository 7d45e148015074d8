"""The contract report of a run (or of `score validate`): per expectation, rows checked and failed, and
a few observed values; as JSON for machines and as one self-contained HTML page for people.

The page is read in MLflow's artifact pane (600 to 800 px wide) as often as on its own, so it is laid out for
both: failing expectations first, then each partition's counts, then what passed; no external resource.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from jobs.contracts.suite import Contract, expectation_key


def contract_report(
    contract: Contract,
    rows_checked: int,
    failures: dict[str, int],
    examples: dict[str, list[str]],
    rows_failed: int,
    by_partition: dict[str, dict[str, Any]] | None = None,
    **context: Any,
) -> dict[str, Any]:
    """Every expectation checks every row, so rows_checked is the run's row count for each of them.

    `by_partition`: input partition label -> its `rows_checked`, and where the caller counted them, its
    `rows_failed` and `failures` (expectation key -> rows, as `failures`); reported in the caller's order."""
    entries = []
    for exp in contract.expectations:
        column = str(exp.get("kwargs", {}).get("column", ""))
        key = expectation_key(exp["type"], column)
        entries.append(
            {
                "expectation": exp["type"],
                "column": column,
                "kwargs": {k: v for k, v in exp.get("kwargs", {}).items() if k != "column"},
                "rows_checked": rows_checked,
                "rows_failed": failures.get(key, 0),
                "examples": examples.get(key, []),
            }
        )
    listed = {expectation_key(e["expectation"], e["column"]) for e in entries}
    for key in sorted(set(failures) - listed):  # checks the pipeline adds itself, e.g. null model inputs
        expectation, _, column = key.partition("(")
        entries.append(
            {
                "expectation": expectation,
                "column": column.rstrip(")"),
                "kwargs": {},
                "rows_checked": rows_checked,
                "rows_failed": failures[key],
                "examples": examples.get(key, []),
            }
        )
    report = {
        **context,
        "contract": contract.name,
        "path": contract.path,
        "sha256": contract.sha256,
        "rows_checked": rows_checked,
        "rows_failed": rows_failed,
        "expectations": entries,
    }
    if by_partition is not None:
        report["by_partition"] = [{"partition": label, **counts} for label, counts in by_partition.items()]
    return report


def partition_counts(
    rows_checked: Mapping[str, int],
    rows_failed: Mapping[str, int] | None = None,
    failures: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, dict[str, Any]]:
    """`contract_report`'s `by_partition`: each input partition's rows checked (in this order) and, where the caller
    counted them per partition, its failing rows and failures (expectation key -> rows)."""
    return {
        label: {"rows_checked": rows}
        | (
            {}
            if rows_failed is None
            else {"rows_failed": rows_failed.get(label, 0), "failures": dict((failures or {}).get(label, {}))}
        )
        for label, rows in rows_checked.items()
    }


def to_html(report: dict[str, Any]) -> str:
    """A page a person can read: the verdict, what failed (with examples), each partition, then what passed."""
    esc = html.escape
    entries = report["expectations"]
    failed = sorted((e for e in entries if e["rows_failed"]), key=lambda e: -e["rows_failed"])
    passed = [e for e in entries if not e["rows_failed"]]
    verdict = "all rows passed" if not report["rows_failed"] else f"{report['rows_failed']:,} rows failed"
    summary = f"{verdict}; {len(failed)} of {len(entries)} expectations failed"
    facts = [
        ("rows checked", f"{report['rows_checked']:,}"),
        ("rows failed", f"{report['rows_failed']:,} ({_share(report['rows_failed'], report['rows_checked'])})"),
    ]
    facts += [
        (k.replace("_", " "), str(v).replace(",", ", ") if k == "partitions" else str(v))
        for k, v in report.items()
        if k not in _OWN and v not in (None, "")
    ]
    facts += [("contract file", report["path"]), ("sha256", report["sha256"][:16] + "\u2026")]
    failing_rows = "".join(
        f"<tr class='fail'><td>{_name(e)}{_arguments(e)}</td><td class='n bad'>{e['rows_failed']:,}</td>"
        f"<td class='n bad'>{_share(e['rows_failed'], e['rows_checked'])}</td>"
        f"<td class='ex'>{esc(', '.join(e['examples'])) or '&mdash;'}</td></tr>"
        for e in failed
    )
    failing = (
        "<div class='scroll'><table><thead><tr><th>expectation</th><th class='n'>rows failed</th>"
        f"<th class='n'>share</th><th>examples</th></tr></thead><tbody>{failing_rows}</tbody></table></div>"
        if failed
        else "<p class='ok'>Every row passed every expectation.</p>"
    )
    passing_rows = "".join(f"<tr><td>{_name(e)}{_arguments(e)}</td></tr>" for e in passed)
    passing = (
        f"<div class='scroll'><table class='passing'><tbody>{passing_rows}</tbody></table></div>"
        if passed
        else "<p>None.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Contract report: {esc(report["contract"])}</title>
<style>{_STYLE}</style></head><body><main>
<h1>Contract {esc(report["contract"])}</h1>
<p class="verdict {"bad" if report["rows_failed"] else "good"}">{esc(summary)}</p>
<dl>{"".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in facts)}</dl>
<h2 id="failing">Failing expectations ({len(failed)})</h2>
{failing}
<h2 id="partitions">Per partition</h2>
{_partitions(report)}
<h2 id="passing">Passing expectations ({len(passed)})</h2>
{passing}
</main></body></html>
"""


# The report's own keys; the others are the caller's context (`contract_report(**context)`: job, run id, partitions,
# policy, engine, ...), shown at the top as given.
_OWN = {"contract", "path", "sha256", "rows_checked", "rows_failed", "expectations", "by_partition"}

_STYLE = """
:root { color-scheme: light; --fail: #b42318; --fail-bg: #fef0ef; --ok: #176b2c; --ok-bg: #ecf8ef; --line: #d9dde3; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f272d; }
main { max-width: 64rem; margin: 0 auto; padding: 1rem 1.25rem 2rem; }
h1 { font-size: 1.35rem; margin: 0 0 .25rem; overflow-wrap: anywhere; }
h2 { font-size: 1.05rem; margin: 1.6rem 0 .5rem; padding-bottom: .2rem; border-bottom: 1px solid var(--line); }
.verdict { display: inline-block; margin: 0 0 .75rem; padding: .2rem .6rem; border-radius: 999px; font-weight: 600; }
.verdict.bad { color: var(--fail); background: var(--fail-bg); }
.verdict.good { color: var(--ok); background: var(--ok-bg); }
dl { display: grid; grid-template-columns: repeat(auto-fill, minmax(14rem, 1fr)); gap: .35rem 1rem; margin: 0; }
dl div { min-width: 0; }
dt { font-size: .75rem; text-transform: uppercase; letter-spacing: .03em; color: #5f7281; }
dd { margin: 0; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: .35rem .5rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { font-size: .8rem; color: #5f7281; font-weight: 600; white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.fail td:first-child { border-left: 3px solid var(--fail); }
td.bad { color: var(--fail); font-weight: 600; }
td.part { white-space: nowrap; }
.which { display: block; }
.exp { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .85em; overflow-wrap: anywhere; }
.col { font-weight: 600; }
.args { display: block; color: #5f7281; font-size: .85em; overflow-wrap: anywhere; }
td.ex { overflow-wrap: anywhere; min-width: 8rem; }
.ok { color: var(--ok); }
.note { color: #5f7281; }
@media (max-width: 640px) {
  main { padding: .75rem; }
  th, td { padding: .3rem .35rem; }
  dl { grid-template-columns: 1fr 1fr; }
}
"""


def _name(entry: dict[str, Any]) -> str:
    """`column` and the expectation, the `expect_` of its type left out."""
    column = f"<span class='col'>{html.escape(entry['column'])}</span> " if entry["column"] else ""
    return f"{column}<span class='exp'>{html.escape(entry['expectation'].removeprefix('expect_'))}</span>"


def _arguments(entry: dict[str, Any]) -> str:
    if not entry["kwargs"]:
        return ""
    text = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in entry["kwargs"].items())
    return f"<span class='args'>{html.escape(text)}</span>"


def _parse_key(key: str) -> dict[str, Any]:
    """An `expectation_key`, `expect_x(column)`, as an entry `_name` shows."""
    expectation, _, column = key.partition("(")
    return {"expectation": expectation, "column": column.removesuffix(")")}


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.2%}" if whole else "&mdash;"


def _partitions(report: dict[str, Any]) -> str:
    """Rows checked and failed in each input partition, with the expectations each one failed; a run that did
    not count them per partition shows its one partition's totals, or says what it checked."""
    esc = html.escape
    labels = [p for p in str(report.get("partitions") or "").split(",") if p]
    rows = report.get("by_partition")
    if rows is None and len(labels) == 1:
        failures = {
            expectation_key(e["expectation"], e["column"]): e["rows_failed"]
            for e in report["expectations"]
            if e["rows_failed"]
        }
        rows = [
            {
                "partition": labels[0],
                "rows_checked": report["rows_checked"],
                "rows_failed": report["rows_failed"],
                "failures": failures,
            }
        ]
    if rows is None:
        listed = ", ".join(labels) or "the selected partitions"
        return (
            f"<p class='note'>This report counts {esc(listed)} together: the run that wrote it did not count rows "
            "per partition.</p>"
        )
    body = []
    for row in rows:
        failed, checked, failures = row.get("rows_failed"), row["rows_checked"], row.get("failures")
        if failures:
            which = "".join(
                f"<span class='which'>{_name(_parse_key(key))} {n:,}</span>"
                for key, n in sorted(failures.items(), key=lambda kv: -kv[1])
            )
        else:
            which = "&mdash;" if failures is not None or failed == 0 else "<span class='note'>not counted</span>"
        bad = " bad" if failed else ""
        body.append(
            f"<tr class='{'fail' if failed else ''}'><td class='part'>{esc(row['partition'])}</td>"
            f"<td class='n'>{checked:,}</td><td class='n{bad}'>{'&mdash;' if failed is None else f'{failed:,}'}</td>"
            f"<td class='n{bad}'>{'&mdash;' if failed is None else _share(failed, checked)}</td><td>{which}</td></tr>"
        )
    return (
        "<div class='scroll'><table><thead><tr><th>partition</th><th class='n'>rows checked</th>"
        "<th class='n'>rows failed</th><th class='n'>share</th><th>failed expectations</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )
