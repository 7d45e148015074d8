"""`score validate` picks the engine `score run` would (a small check stays in this process: no Ray to start),
finds exactly what the Ray engine finds, and returns its report to a notebook instead of raising."""

from __future__ import annotations

import collections

import pytest

from tests.conftest import DAYS, ROWS_PER_DAY
from tests.stages.test_quarantine import break_rows

INLINE = ("engine.inline_max_rows=1000000",)


def test_validate_in_process_reports_what_validate_on_ray_reports(fresh_project):
    project = fresh_project
    break_rows(project)
    job = project.job("validated", contract={"suite": "data_contracts/customers.json", "on_failure": "quarantine"})
    reports = {}
    for engine, overrides in (("inline", INLINE), ("ray", ())):
        code, report = project.validate(job, partitions="all", overrides=overrides)
        assert code == 3 and report["engine"] == engine
        reports[engine] = report
    inline, ray = reports["inline"], reports["ray"]
    assert inline["rows_checked"] == ray["rows_checked"] == len(DAYS) * ROWS_PER_DAY
    assert inline["rows_failed"] == ray["rows_failed"] == 3
    failing = {
        engine: {(e["expectation"], e["column"], e["rows_failed"]) for e in r["expectations"]}
        for engine, r in reports.items()
    }
    assert failing["inline"] == failing["ray"]
    # the report's per-partition breakdown adds up to its totals, the same on both engines
    assert inline["by_partition"] == ray["by_partition"]
    days = [f"ds={d.isoformat()}" for d in DAYS]
    assert [(p["partition"], p["rows_checked"]) for p in inline["by_partition"]] == [(d, ROWS_PER_DAY) for d in days]
    assert sum(p["rows_failed"] for p in inline["by_partition"]) == 3
    totals = collections.Counter()
    for p in inline["by_partition"]:
        totals.update(p["failures"])
    assert dict(totals) == {
        f"{e['expectation']}({e['column']})": e["rows_failed"] for e in inline["expectations"] if e["rows_failed"]
    }


def test_validate_job_returns_the_report_when_asked_not_to_raise(fresh_project):
    from jobs import ContractFailure, validate_job

    project = fresh_project
    break_rows(project)
    job = project.job("returned", contract={"suite": "data_contracts/customers.json", "on_failure": "quarantine"})
    with project.environment():
        with pytest.raises(ContractFailure) as raised:
            validate_job(job, partitions="all", overrides=INLINE)
        report = validate_job(job, partitions="all", overrides=INLINE, raise_on_failure=False)
    assert report == {**raised.value.report, "duration_s": report["duration_s"]}
    assert report["rows_failed"] == 3 and report["engine"] == "inline"
