"""The contract report of a run (or of `score validate`): per expectation, rows checked and failed, and
a few observed values; as JSON for machines and as one self-contained HTML page for people."""

from __future__ import annotations

import html
from typing import Any

from jobs.contracts.suite import Contract, expectation_key


def contract_report(
    contract: Contract,
    rows_checked: int,
    failures: dict[str, int],
    examples: dict[str, list[str]],
    rows_failed: int,
    **context: Any,
) -> dict[str, Any]:
    """Every expectation checks every row, so rows_checked is the run's row count for each of them."""
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
    return {
        **context,
        "contract": contract.name,
        "path": contract.path,
        "sha256": contract.sha256,
        "rows_checked": rows_checked,
        "rows_failed": rows_failed,
        "expectations": entries,
    }


def metrics(report: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics: one failed-row count per expectation, plus the totals."""
    out = {"contract_rows_checked": report["rows_checked"], "contract_rows_failed": report["rows_failed"]}
    for i, entry in enumerate(report["expectations"]):
        name = f"contract_failed/{i:02d}_{entry['expectation'].removeprefix('expect_')}"
        if entry["column"]:
            name += f"/{entry['column']}"
        out[name] = entry["rows_failed"]
    return out


def to_html(report: dict[str, Any]) -> str:
    """A page a person can read: what was checked, what failed, with examples."""
    esc = html.escape
    failed = [e for e in report["expectations"] if e["rows_failed"]]
    verdict = "all rows passed" if not report["rows_failed"] else f"{report['rows_failed']:,} rows failed"
    rows = []
    for e in report["expectations"]:
        status = "fail" if e["rows_failed"] else "pass"
        share = e["rows_failed"] / e["rows_checked"] if e["rows_checked"] else 0
        rows.append(
            f"<tr class='{status}'><td>{esc(e['expectation'])}</td><td>{esc(e['column'])}</td>"
            f"<td><code>{esc(str(e['kwargs']))}</code></td><td class='n'>{e['rows_checked']:,}</td>"
            f"<td class='n'>{e['rows_failed']:,}</td><td class='n'>{share:.3%}</td>"
            f"<td>{esc(', '.join(e['examples']))}</td></tr>"
        )
    context = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in report.items() if k not in ("expectations",)
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Contract report: {esc(report["contract"])}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.fail td {{ background: #fde8e8; }} tr.pass td:first-child {{ color: #176b2c; }}
h1 small {{ font-weight: normal; color: #666; }}
</style></head><body>
<h1>Contract {esc(report["contract"])} <small>{esc(verdict)}; {len(failed)} of {len(report["expectations"])}
expectations failed</small></h1>
<table>{context}</table>
<table><tr><th>expectation</th><th>column</th><th>arguments</th><th>rows checked</th><th>rows failed</th>
<th>share</th><th>examples</th></tr>
{"".join(rows)}
</table></body></html>
"""
