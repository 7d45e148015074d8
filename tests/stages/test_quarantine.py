"""Contract policies on real runs: quarantine with reasons, thresholds, warn; re-runs replace both tables."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from mlflow import MlflowClient

from tests.conftest import DAYS, ROWS_PER_DAY

DAY = DAYS[-1].isoformat()


def break_rows(project) -> dict[int, str]:
    """Make three rows of the newest partition break the contract; returns customer_id -> expected reason."""
    path = project.data / f"ds={DAY}" / "part-0.parquet"
    table = pq.read_table(path)
    ids = table.column("customer_id").to_pylist()

    def poke(name, changes, type_):
        nonlocal table
        values = table.column(name).to_pylist()
        for i, v in changes.items():
            values[i] = v
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values, type_))

    poke("age", {10: 7, 20: 150}, pa.int64())
    poke("region", {30: "atlantis"}, pa.string())
    pq.write_table(table, path)
    return {
        ids[10]: "expect_column_values_to_be_between(age)=7",
        ids[20]: "expect_column_values_to_be_between(age)=150",
        ids[30]: "expect_column_values_to_be_in_set(region)=atlantis",
    }


def reasons_by_id(table: pa.Table) -> dict[int, str]:
    out = {}
    for cid, reasons in zip(table.column("customer_id").to_pylist(), table.column("_reasons").to_pylist()):
        out[cid] = ";".join(f"{r['expectation']}({r['column']})={r['value']}" for r in reasons)
    return out


def test_quarantine_commits_both_tables_under_one_run_and_reruns_replace_them(fresh_project):
    project = fresh_project
    expected = break_rows(project)
    job = project.job(
        "churn_q", contract={"suite": "data_contracts/customers.json", "on_failure": "quarantine", "max_bad_rows": 10}
    )
    runs = []
    for force in (False, True):
        code, summary = project.run(job, force=force)
        assert code == 0, summary.get("error")
        runs.append(summary)
    first, second = runs
    assert (second["rows_in"], second["rows_scored"], second["rows_quarantined"]) == (ROWS_PER_DAY, ROWS_PER_DAY - 3, 3)
    assert (first["table_version"], first["quarantine_version"]) == (0, 0)
    assert (second["table_version"], second["quarantine_version"]) == (1, 1)

    output = DeltaTable(second["table_uri"]).to_pyarrow_table()
    quarantine = DeltaTable(str(project.warehouse / "churn_q__quarantine")).to_pyarrow_table()
    assert output.num_rows == ROWS_PER_DAY - 3 and quarantine.num_rows == 3
    assert not set(output.column("customer_id").to_pylist()) & set(expected)
    assert reasons_by_id(quarantine) == expected
    assert set(quarantine.column("run_id").to_pylist()) == {second["run_id"]}
    assert set(quarantine.column("ds").to_pylist()) == {DAY}
    assert set(quarantine.column("_source_file").to_pylist()) == {str(project.data / f"ds={DAY}" / "part-0.parquet")}
    original = pq.read_table(project.data / f"ds={DAY}" / "part-0.parquet")
    kept = original.filter(pc.is_in(original.column("customer_id"), pa.array(list(expected)))).sort_by("customer_id")
    got = quarantine.sort_by("customer_id")
    for column in ("age", "region", "monthly_charges", "updated_at", "plan_tier"):
        assert got.column(column).to_pylist() == kept.column(column).to_pylist(), column

    for uri, key in (
        (second["table_uri"], "score.run_id"),
        (str(project.warehouse / "churn_q__quarantine"), "score.run_id"),
    ):
        assert DeltaTable(uri).history(1)[0][key] == second["run_id"]
    tags = MlflowClient(project.tracking_uri).get_run(second["run_id"]).data.tags
    assert tags["score.quarantine_version"] == "1"


def test_over_threshold_exits_3_and_commits_neither_table(fresh_project):
    project = fresh_project
    break_rows(project)
    job = project.job(
        "churn_q_limit",
        contract={"suite": "data_contracts/customers.json", "on_failure": "quarantine", "max_bad_rows": 2},
    )
    code, summary = project.run(job)
    assert code == 3, summary.get("error")
    assert "3 of 6000 rows failed, over max_bad_rows 2" in summary["error"]
    for table in ("churn_q_limit", "churn_q_limit__quarantine"):
        assert not (project.warehouse / table / "_delta_log").exists()
        assert (
            not list((project.warehouse / table).rglob("*.parquet")) if (project.warehouse / table).exists() else True
        )


def test_warn_scores_every_row_and_reports_the_failures(fresh_project):
    project = fresh_project
    break_rows(project)
    job = project.job("churn_warn", contract={"suite": "data_contracts/customers.json", "on_failure": "warn"})
    code, summary = project.run(job)
    assert code == 0, summary.get("error")
    assert (summary["rows_scored"], summary["rows_quarantined"]) == (ROWS_PER_DAY, 0)
    assert summary["contract"]["rows_failed"] == 3
    assert DeltaTable(summary["table_uri"]).to_pyarrow_table().num_rows == ROWS_PER_DAY
    assert not (project.warehouse / "churn_warn__quarantine").exists()


def test_run_logs_the_contract_report(fresh_project):
    import json

    project = fresh_project
    break_rows(project)
    job = project.job("churn_report", contract={"suite": "data_contracts/customers.json", "on_failure": "quarantine"})
    code, summary = project.run(job)
    assert code == 0, summary.get("error")
    client = MlflowClient(project.tracking_uri)
    folder = client.download_artifacts(summary["run_id"], "contract", str(project.root / "report"))
    report = json.loads(open(f"{folder}/report.json").read())
    assert report["rows_checked"] == ROWS_PER_DAY and report["rows_failed"] == 3
    by_key = {(e["expectation"], e["column"]): e for e in report["expectations"]}
    age = by_key[("expect_column_values_to_be_between", "age")]
    assert (age["rows_checked"], age["rows_failed"], sorted(age["examples"])) == (ROWS_PER_DAY, 2, ["150", "7"])
    assert by_key[("expect_column_values_to_be_in_set", "region")]["rows_failed"] == 1
    assert sum(e["rows_failed"] for e in report["expectations"]) == 3
    page = open(f"{folder}/report.html").read()
    assert "3 rows failed; 2 of 33" in page and "atlantis" in page
    metrics = client.get_run(summary["run_id"]).data.metrics
    assert (metrics["Contract/rows_checked"], metrics["Contract/rows_failed"]) == (ROWS_PER_DAY, 3)
    assert metrics["Contract/expectations_failed"] == 2
    assert not [k for k in metrics if k.startswith("contract_failed/")]  # each expectation's count: in the report


def test_validate_reports_without_scoring(fresh_project, tmp_path):
    import json

    project = fresh_project
    job = project.job("churn_validate")
    proc = project.score("validate", str(job), "--partitions", "all", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert (report["rows_checked"], report["rows_failed"]) == (3 * ROWS_PER_DAY, 0)

    break_rows(project)
    page = tmp_path / "report.html"
    proc = project.score("validate", str(job), "--json", "--report", str(page))
    assert proc.returncode == 3, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert (report["rows_checked"], report["rows_failed"]) == (ROWS_PER_DAY, 3)
    assert "FAIL expect_column_values_to_be_in_set(region): 1 of 6000 rows, e.g. atlantis" in proc.stderr
    assert "atlantis" in page.read_text()
    assert not project.warehouse.exists()


def test_an_event_time_in_the_future_fails_its_row_and_is_never_the_watermark(fresh_project):
    """Guards (issue 20): one updated_at of 9999-12-31 became the partition's watermark, and `score freshness`
    called the table fresh for ever ("-2912104d old")."""
    project = fresh_project
    path = project.data / f"ds={DAY}" / "part-0.parquet"
    table = pq.read_table(path)
    times = table.column("updated_at").to_pylist()
    times[7] = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)
    index = table.schema.get_field_index("updated_at")
    pq.write_table(table.set_column(index, "updated_at", pa.array(times, table.schema.field("updated_at").type)), path)
    future_id = table.column("customer_id")[7].as_py()

    code, failed = project.run(project.job("future_fail"))  # the contract's policy is fail
    assert code == 3, failed["error"]
    assert "event_time_in_future(updated_at): 1 rows, e.g. 9999-12-31T00:00:00+00:00" in failed["error"]

    job = project.job("future", contract={"suite": "data_contracts/customers.json", "on_failure": "quarantine"})
    code, summary = project.run(job)
    assert code == 0, summary["error"]
    assert summary["rows_quarantined"] == 1
    quarantine = DeltaTable(str(project.warehouse / "future__quarantine")).to_pyarrow_table()
    assert reasons_by_id(quarantine) == {future_id: "event_time_in_future(updated_at)=9999-12-31T00:00:00+00:00"}
    kept = [t for i, t in enumerate(times) if i != 7]
    assert summary["input_watermark"] == max(kept).isoformat()
    now = (max(kept) + dt.timedelta(hours=30)).isoformat()
    proc = project.score("freshness", "future", "--max-age", "26h", "--now", now)
    assert proc.returncode == 4, proc.stdout + proc.stderr
