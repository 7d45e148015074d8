"""After a run of the demo job: lineage, freshness, queries by name and version, and analysts' readers."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest
from conftest import DAYS, REPO, ROWS_PER_DAY, Project
from deltalake import DeltaTable
from mlflow.tracking import MlflowClient
from pyarrow import fs as pafs

from jobs.inputs import fingerprint, select_input

TABLE = "churn_scores"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, models_dir):
    """The repo's own demo job (registry alias, contract with quarantine, `unscored`) run by the CLI twice:
    the first two days, then the rest, so the newest version holds rows from two runs."""
    from jobs.spec.load import load_tracking
    from jobs.tracking.registry import register_model

    project = Project(tmp_path_factory.mktemp("demo"), models_dir)
    job = project.root / "conf" / "jobs" / "churn_daily.yaml"
    shutil.copy(REPO / "conf" / "jobs" / "churn_daily.yaml", job)
    tracking = load_tracking(project.root, environ=project.env)
    register_model(models_dir / "model.onnx", "churn", "champion", tracking)
    runs = []
    for selector in (f"unscored,ds={DAYS[0].isoformat()}..{DAYS[1].isoformat()}", None):
        proc, summary = project.score_json("run", str(job), *(["-p", selector] if selector else []))
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(summary)
    return project, job, runs


def test_lineage_names_exactly_what_each_run_used(demo):
    project, job, runs = demo
    proc = project.score("lineage", TABLE, "--json")
    assert proc.returncode == 0, proc.stderr
    lineage = json.loads(proc.stdout)
    assert lineage["version"] == runs[-1]["table_version"] == 1 and lineage["complete"]
    assert [run["run_id"] for run in lineage["runs"]] == [runs[1]["run_id"], runs[0]["run_id"]]

    client = MlflowClient(project.tracking_uri)
    contract = project.root / "data_contracts" / "customers.json"
    model_sha = hashlib.sha256((project.models / "model.onnx").read_bytes()).hexdigest()
    from jobs.tracking.code_version import code_version

    for summary, run in zip(reversed(runs), lineage["runs"]):
        mlflow_run = client.get_run(summary["run_id"])
        tags = mlflow_run.data.tags
        assert run["committed_version"] == summary["table_version"] == int(tags["score.table_version"])
        assert run["run_key"] == summary["run_key"] == tags["score.run_key"]
        assert run["model"] == {
            "uri": "models:/churn@champion",
            "resolved_uri": "models:/churn/1",
            "version": "1",
            "sha256": model_sha,
            "registry_name": "churn",
            "runtime": "onnx",
        }
        # relative to the project: a submitted job runs in a temporary copy of it on the head node
        assert run["contract"]["path"] == "data_contracts/customers.json" == tags["score.contract"]
        assert run["contract"]["sha256"] == hashlib.sha256(contract.read_bytes()).hexdigest()
        assert run["contract"]["sha256"] == tags["score.contract_sha256"]
        assert run["code_version"] == code_version() == tags["score.code_version"]
        spec = client.download_artifacts(summary["run_id"], "spec/resolved.yaml")
        assert run["spec"] == open(spec).read()
        assert run["mlflow"]["run_id"] == summary["run_id"] and run["mlflow"]["reachable"]
        assert run["mlflow"]["experiment_id"] == mlflow_run.info.experiment_id
        assert run["mlflow"]["status"] == "FINISHED"
        assert run["input"]["fingerprint"] == summary["input_fingerprint"] == tags["score.input_fingerprint"]

        # The exact files on disk, partition by partition.
        labels = [p["partition"] for p in run["input"]["partitions"]]
        assert labels == summary["partitions"]
        for part in run["input"]["partitions"]:
            on_disk = select_input(str(project.data), ["ds"], part["partition"])
            assert part["fingerprint"] == fingerprint(on_disk.files)
            assert part["files"] == [
                {"path": f.path, "size": f.size, "mtime_ns": f.mtime_ns, "rows": pq.read_metadata(f.path).num_rows}
                for f in on_disk.files
            ]
            assert part["rows"] == ROWS_PER_DAY
        for out in run["outputs"]:
            assert out["rows_scored"] + out["rows_quarantined"] == ROWS_PER_DAY

    # The other direction: the run's tags name the table version, whose commit names the run.
    commits = {c["version"]: c for c in DeltaTable(runs[-1]["table_uri"]).history()}
    assert commits[1]["score.run_id"] == runs[1]["run_id"]

    proc = project.score("lineage", TABLE, "--version", "0")
    assert proc.returncode == 0, proc.stderr
    assert f"run {runs[0]['run_id']} (job churn_daily) committed version 0" in proc.stdout
    assert runs[1]["run_id"] not in proc.stdout
    assert "models:/churn@champion -> models:/churn/1 (version 1, sha256 " + model_sha in proc.stdout
    for f in select_input(str(project.data), ["ds"], f"ds={DAYS[0].isoformat()}").files:
        assert f.path in proc.stdout


def test_freshness_exits_0_when_fresh_and_4_when_stale(demo):
    project, job, runs = demo
    watermark = dt.datetime.fromisoformat(runs[-1]["input_watermark"]).replace(tzinfo=dt.UTC)
    newest = f"ds={DAYS[-1].isoformat()}"

    fresh_at = watermark + dt.timedelta(hours=2)
    proc = project.score("freshness", TABLE, "--max-age", "26h", "--now", fresh_at.isoformat())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("fresh: churn_scores v1: newest partition " + newest)
    assert "2h old, within max-age 26h" in proc.stdout

    stale_at = watermark + dt.timedelta(hours=30, minutes=5)
    proc = project.score("freshness", TABLE, "--max-age", "26h", "--now", stale_at.isoformat())
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout.strip().count("\n") == 0
    assert proc.stdout.startswith(f"stale: churn_scores v1: newest partition {newest} has data up to ")
    assert proc.stdout.strip().endswith("30h 5m old, 4h 5m over max-age 26h")

    # The job's own limit (output.max_age: 26h in the demo job) is used when --max-age is not given.
    proc = project.score("freshness", TABLE, "--now", stale_at.isoformat())
    assert proc.returncode == 4 and "4h 5m over max-age 26h" in proc.stdout
    proc, rerun = project.score_json("run", str(job), "--set", "output.max_age=31h", "-p", f"ds={DAYS[-1].isoformat()}")
    assert rerun["status"] == "succeeded", proc.stderr[-2000:]
    proc = project.score("freshness", TABLE, "--now", stale_at.isoformat(), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["fresh"], result["max_age"], result["partition"], result["version"]) == (True, "31h", newest, 2)
    assert result["age_s"] == pytest.approx((30 * 60 + 5) * 60)

    run = MlflowClient(project.tracking_uri).get_run(runs[-1]["run_id"])
    assert run.data.metrics["Run/freshness_lag_s"] == pytest.approx(runs[-1]["freshness_lag_s"])
    assert runs[-1]["freshness_lag_s"] > 0


def test_query_by_name_and_version_in_three_formats(demo):
    project, job, runs = demo
    sql = f"SELECT ds, count(*) AS n FROM {TABLE} GROUP BY ds ORDER BY ds"
    proc = project.score("query", sql, "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    expected = {d.isoformat(): ROWS_PER_DAY - _quarantined(project, d) for d in DAYS}
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == '"ds","n"'
    assert {line.split(",")[0].strip('"'): int(line.split(",")[1]) for line in lines[1:]} == expected

    proc = project.score("query", sql, "--version", "0", "--format", "json")
    assert {r["ds"]: r["n"] for r in json.loads(proc.stdout)} == {
        d: n for d, n in expected.items() if d <= DAYS[1].isoformat()
    }
    proc = project.score(
        "query",
        f"SELECT count(*) AS n FROM {TABLE} JOIN {TABLE}__quarantine USING (customer_id)",
        "--version",
        f"{TABLE}=0",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].strip() == "n"

    for bad, message in (
        (f"DELETE FROM {TABLE}", "give one SELECT statement"),
        ("SELECT * FROM nope", "tables in"),
        (f"SELECT 1 FROM {TABLE}", None),
    ):
        proc = project.score("query", bad, "--version", "99") if message is None else project.score("query", bad)
        assert proc.returncode == 2
        assert (message or "version 99") in proc.stderr


def test_tables_lists_versions_rows_and_watermarks(demo):
    project, job, runs = demo
    proc = project.score("tables", "--json")
    assert proc.returncode == 0, proc.stderr
    tables = {t["name"]: t for t in json.loads(proc.stdout)}
    assert set(tables) == {TABLE, f"{TABLE}__profiles"}  # its quarantine twin never held a row: hidden
    assert "1 empty quarantine table(s) not shown (--all shows them)" in proc.stderr
    assert tables[f"{TABLE}__profiles"]["rows"] > 0
    current = DeltaTable(runs[-1]["table_uri"])
    assert tables[TABLE]["version"] == current.version()
    assert tables[TABLE]["rows"] == current.to_pyarrow_table().num_rows
    assert tables[TABLE]["newest_partition"] == f"ds={DAYS[-1].isoformat()}"
    proc = project.score("history", "nope")
    assert (
        proc.returncode == 2
        and f"tables in {project.warehouse}: {TABLE}, {TABLE}__profiles, {TABLE}__quarantine" in proc.stderr
    )


def test_analysts_read_a_job_table_with_polars_and_duckdb(demo):
    import duckdb
    import polars as pl

    project, job, runs = demo
    uri = runs[-1]["table_uri"]
    expected = DeltaTable(uri).to_pyarrow_table().sort_by("customer_id")

    frame = pl.read_delta(uri).sort("customer_id")
    assert frame.height == expected.num_rows
    assert frame["churn_probability"].to_list() == expected.column("churn_probability").to_pylist()
    assert pl.read_delta(uri, version=0).height == DeltaTable(uri, version=0).to_pyarrow_table().num_rows
    lazy = pl.scan_delta(uri).filter(pl.col("ds") == DAYS[-1].isoformat()).select(pl.len()).collect()
    assert lazy.item() == pc_count(expected, DAYS[-1].isoformat())

    con = duckdb.connect()
    # A native filesystem: with deltalake's Python one, reads a LIMIT left in flight can crash at exit.
    native = pafs.SubTreeFileSystem(uri, pafs.LocalFileSystem())
    con.register("churn_scores", DeltaTable(uri, version=0).to_pyarrow_dataset(filesystem=native))
    (n,) = con.execute("SELECT count(*) FROM churn_scores").fetchone()
    assert n == DeltaTable(uri, version=0).to_pyarrow_table().num_rows
    top = con.execute("SELECT customer_id FROM churn_scores ORDER BY churn_probability DESC LIMIT 3").fetchall()
    assert len(top) == 3


def pc_count(table, day: str) -> int:
    return table.filter(table.column("ds").to_numpy() == day).num_rows


def _quarantined(project, day) -> int:
    uri = project.warehouse / f"{TABLE}__quarantine"
    rows = DeltaTable(str(uri)).to_pyarrow_table()
    return sum(1 for d in rows.column("ds").to_pylist() if d == day.isoformat())


def test_git_is_what_code_version_reports():
    from jobs.tracking.code_version import code_version

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert code_version().removesuffix("-dirty") == head
