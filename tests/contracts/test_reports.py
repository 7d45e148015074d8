"""The contract report's page (`jobs.contracts.reports.to_html`): failing expectations first (most failed rows
first), then each partition's counts, then the passing ones; self-contained. How it looks in a browser, in MLflow's
artifact pane and alone, is checked by tests/tracking/test_mlflow_ui.py."""

from __future__ import annotations

import html
import re

from jobs.contracts.reports import contract_report, partition_counts, to_html
from jobs.contracts.suite import load_contract
from tests.conftest import REPO

AGE, REGION = "expect_column_values_to_be_between(age)", "expect_column_values_to_be_in_set(region)"
FAILURES = {REGION: 1, AGE: 2}
EXAMPLES = {AGE: ["150", "7"], REGION: ["atlantis"]}


def _report(**context):
    contract = load_contract(REPO / "data_contracts" / "customers.json")
    return contract_report(contract, 18_000, FAILURES, EXAMPLES, 3, job="churn", **context)


def _text(page: str) -> str:
    """The page's visible text, roughly: tags and styles out."""
    page = re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_failing_expectations_come_first_most_rows_first_then_partitions_then_passing():
    by_partition = {
        "ds=2026-11-25": {"rows_checked": 6_000, "rows_failed": 0, "failures": {}},
        "ds=2026-11-27": {"rows_checked": 6_000, "rows_failed": 3, "failures": FAILURES},
    }
    report = _report(partitions="ds=2026-11-25,ds=2026-11-27", by_partition=by_partition)
    assert [p["partition"] for p in report["by_partition"]] == list(by_partition)
    text = _text(to_html(report))
    assert "3 rows failed; 2 of 33 expectations failed" in text
    failing, partitions, passing = (
        text.index(h) for h in ("Failing expectations (2)", "Per partition", "Passing expectations (31)")
    )
    assert failing < partitions < passing
    shown = text[failing:partitions]
    assert shown.index("age") < shown.index("region") and "150, 7" in shown and "min_value=18" in shown
    rows = text[partitions:passing]
    assert "ds=2026-11-25 6,000 0 0.00%" in rows
    assert "ds=2026-11-27 6,000 3 0.05% age column_values_to_be_between 2 region column_values_to_be_in_set 1" in rows


def test_partitions_counted_without_their_failures_say_so():
    counts = partition_counts({"ds=2026-11-26": 6_000, "ds=2026-11-27": 6_000})
    assert counts == {"ds=2026-11-26": {"rows_checked": 6_000}, "ds=2026-11-27": {"rows_checked": 6_000}}
    rows = _text(to_html(_report(partitions="ds=2026-11-26,ds=2026-11-27", by_partition=counts)))
    assert "ds=2026-11-27 6,000 \u2014 \u2014 not counted" in rows
    full = partition_counts({"ds=2026-11-27": 6_000}, {"ds=2026-11-27": 3}, {"ds=2026-11-27": FAILURES})
    assert full == {"ds=2026-11-27": {"rows_checked": 6_000, "rows_failed": 3, "failures": FAILURES}}


def test_one_partition_shows_its_own_counts_and_several_are_said_to_be_counted_together():
    one = _text(to_html(_report(partitions="ds=2026-11-27")))
    assert "ds=2026-11-27 18,000 3 0.02% age" in one
    several = _text(to_html(_report(partitions="ds=2026-11-26,ds=2026-11-27")))
    assert "counts ds=2026-11-26, ds=2026-11-27 together" in several


def test_the_page_is_self_contained_and_fits_a_narrow_pane():
    page = to_html(_report(partitions="ds=2026-11-27", run_id="abc"))
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page) and "@import" not in page
    assert 'name="viewport"' in page and "@media (max-width" in page and "overflow-x: auto" in page
    assert "<script" not in page


def test_a_passing_run_says_so():
    contract = load_contract(REPO / "data_contracts" / "customers.json")
    text = _text(to_html(contract_report(contract, 6_000, {}, {}, 0, partitions="ds=2026-11-27")))
    assert "all rows passed; 0 of 33 expectations failed" in text and "Failing expectations (0)" in text
