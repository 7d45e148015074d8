"""Tables after the run: incremental runs, run keys, racing runs, rollback, time travel, vacuum."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import DAYS, ROWS_PER_DAY
from deltalake import DeltaTable

from jobs.inputs import fingerprint, select_input
from jobs.tools import synthetic


def _add_day(project, day, first_id: int) -> None:
    table = synthetic.customers(ROWS_PER_DAY, day, first_id=first_id)
    folder = project.data / f"ds={day.isoformat()}"
    folder.mkdir(parents=True)
    half = ROWS_PER_DAY // 2
    pq.write_table(table.slice(0, half), folder / "part-0.parquet")
    pq.write_table(table.slice(half), folder / "part-1.parquet")


def _sorted(table):
    return table.sort_by("customer_id")


def test_unscored_picks_exactly_the_new_and_changed_partitions(fresh_project, tmp_path):
    from models.churn import build

    project = fresh_project
    job = project.job("churn_incremental", input__partitions="unscored")
    labels = [f"ds={d.isoformat()}" for d in DAYS]

    code, first = project.run(job)
    assert code == 0, first["error"]
    assert first["partitions"] == labels and first["rows_scored"] == 3 * ROWS_PER_DAY

    code, again = project.run(job)
    assert (code, again["status"]) == (0, "up_to_date"), again
    assert "nothing to score" in again["message"] and again["run_id"] is None
    assert DeltaTable(first["table_uri"]).version() == first["table_version"]

    # A new day arrives and one file of the first day is rewritten (fewer rows): exactly those two.
    new_day = DAYS[-1] + (DAYS[-1] - DAYS[-2])
    _add_day(project, new_day, first_id=3 * ROWS_PER_DAY)
    changed = project.data / f"ds={DAYS[0].isoformat()}" / "part-1.parquet"
    rows = pq.read_table(changed)
    pq.write_table(rows.slice(0, rows.num_rows - 7), changed)
    code, third = project.run(job)
    assert code == 0, third["error"]
    assert third["partitions"] == [labels[0], f"ds={new_day.isoformat()}"]
    assert third["rows_in"] == third["rows_scored"] == 2 * ROWS_PER_DAY - 7
    table = DeltaTable(first["table_uri"]).to_pyarrow_table()
    assert table.num_rows == 4 * ROWS_PER_DAY - 7
    assert pc.count_distinct(table.column("customer_id")).as_py() == table.num_rows

    # A new model version: every partition is unscored again; `unscored,ds=A..B` stays within the range.
    frame, labels_ = build.training_frame(rows=3_000, seed=11)
    other = build.build_onnx(tmp_path / "retrained.onnx", frame, labels_)
    retrained = project.job("churn_incremental", input__partitions="unscored", model__uri=str(other))
    code, fourth = project.run(retrained, f"unscored,ds={DAYS[0].isoformat()}..{DAYS[1].isoformat()}")
    assert code == 0, fourth["error"]
    assert fourth["partitions"] == labels[:2]
    code, fifth = project.run(retrained)
    assert code == 0, fifth["error"]
    assert fifth["partitions"] == [labels[2], f"ds={new_day.isoformat()}"]
    code, done = project.run(retrained)
    assert done["status"] == "up_to_date"


def test_a_repeated_run_key_is_a_no_op_success(fresh_project):
    project = fresh_project
    job = project.job("churn_keyed")
    key = "scheduled__2026-11-28T00:00:00+00:00"
    proc, first = project.score_json("run", str(job), "--run-key", key)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (first["status"], first["run_key"], first["table_version"]) == ("succeeded", key, 0)

    proc, retry = project.score_json("run", str(job), "--run-key", key)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (retry["status"], retry["run_id"], retry["table_version"]) == ("already_committed", first["run_id"], 0)
    assert f"run key {key} already committed as churn_keyed v0 by run {first['run_id']}" in proc.stderr
    assert "Ray" not in proc.stderr  # decided before any engine started
    table = DeltaTable(first["table_uri"])
    assert table.version() == 0
    assert table.transaction_version(f"score-run-key:{key}") == 1

    proc, other = project.score_json("run", str(job), "--run-key", key + "-rerun")
    assert (proc.returncode, other["status"], other["table_version"]) == (0, "succeeded", 1)


def test_racing_runs_on_the_same_partitions_leave_one_consistent_version(fresh_project):
    project = fresh_project
    job = project.job("churn_race", contract={"suite": "data_contracts/customers.json", "on_failure": "quarantine"})
    logs = [(project.root / f"racer-{n}.out", project.root / f"racer-{n}.err") for n in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "run", str(job), "-p", "all", "--run-key", f"racer-{n}", "--json"],
            cwd=project.root,
            env=project.env,
            stdout=out.open("w"),
            stderr=err.open("w"),
        )
        for n, (out, err) in enumerate(logs)
    ]
    results = [(p.wait(timeout=600), out.read_text(), err.read_text()) for p, (out, err) in zip(procs, logs)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 75], [(code, err[-2000:]) for code, _, err in results]  # the loser may be retried
    (_, won_out, _), (_, lost_out, lost_err) = sorted(results, key=lambda r: r[0])
    won, lost = json.loads(won_out), json.loads(lost_out)
    assert "while this run was scoring the same partition(s)" in lost["error"] or "first" in lost["error"]
    assert "nothing was written by this run" in lost["error"]

    table = DeltaTable(won["table_uri"])
    assert table.version() == won["table_version"] == 0
    rows = table.to_pyarrow_table()
    assert rows.num_rows == 3 * ROWS_PER_DAY
    assert set(rows.column("run_id").to_pylist()) == {won["run_id"]}
    quarantine = DeltaTable(won["table_uri"] + "__quarantine")
    assert set(quarantine.to_pyarrow_table().column("run_id").to_pylist()) <= {won["run_id"]}
    assert all(h.get("score.run_id") != lost["run_id"] or h.get("score.role") == "undo" for h in quarantine.history())
    on_disk = {str(p) for p in Path(won["table_uri"]).rglob("*.parquet")}
    assert on_disk == set(table.file_uris())  # the loser deleted every file it wrote


def test_rollback_and_time_travel_return_the_exact_earlier_rows(fresh_project, tmp_path):
    from models.churn import build

    project = fresh_project
    job = project.job("churn_rollback", contract={"suite": "data_contracts/customers.json", "on_failure": "quarantine"})
    code, first = project.run(job, "all")
    assert code == 0, first["error"]
    uri = first["table_uri"]
    before = _sorted(DeltaTable(uri, version=0).to_pyarrow_table())

    frame, labels = build.training_frame(rows=3_000, seed=5)
    other = build.build_onnx(tmp_path / "bad_model.onnx", frame, labels)
    code, second = project.run(
        project.job(
            "churn_rollback",
            model__uri=str(other),
            contract={"suite": "data_contracts/customers.json", "on_failure": "quarantine"},
        ),
        "all",
    )
    assert code == 0, second["error"]
    changed = _sorted(DeltaTable(uri).to_pyarrow_table())
    assert not changed.column("churn_probability").equals(before.column("churn_probability"))

    proc = project.score("rollback", "churn_rollback", "0", "--reason", "model v2 scored wrong")
    assert proc.returncode == 0, proc.stderr
    assert "restored version 0 as version 2" in proc.stdout
    after = _sorted(DeltaTable(uri).to_pyarrow_table())
    assert DeltaTable(uri).version() == 2
    assert after.equals(before)
    assert _sorted(DeltaTable(uri, version=1).to_pyarrow_table()).equals(changed)
    quarantine = DeltaTable(uri + "__quarantine")
    assert set(quarantine.to_pyarrow_table().column("run_id").to_pylist()) <= {first["run_id"]}

    proc = project.score("history", "churn_rollback", "--json")
    assert proc.returncode == 0, proc.stderr
    newest, middle, oldest = json.loads(proc.stdout)
    assert (newest["version"], newest["role"], newest["restored_version"]) == (2, "rollback", 0)
    assert newest["reason"] == "model v2 scored wrong"
    assert (middle["run_id"], middle["rows"], middle["model_version"]) == (
        second["run_id"],
        3 * ROWS_PER_DAY,
        second["model_version"],
    )
    assert oldest["partitions"] == ",".join(f"ds={d.isoformat()}" for d in DAYS)

    # Time travel through `score query`, and the table state the next `unscored` run sees.
    proc = project.score(
        "query",
        "SELECT count(*) AS n, count(DISTINCT run_id) AS runs, min(run_id) AS run FROM churn_rollback",
        "--version",
        "1",
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"n": 3 * ROWS_PER_DAY, "runs": 1, "run": second["run_id"]}]
    from jobs.tables.lineage import table_state

    state = table_state(uri)
    assert {run.run_id for run in state.runs} == {first["run_id"]}


def test_vacuum_keeps_what_retention_promises(fresh_project):
    project = fresh_project
    job = project.job("churn_vacuum")
    code, first = project.run(job)
    code, second = project.run(job, force=True)
    assert code == 0, second["error"]
    uri = Path(first["table_uri"])
    version0 = _sorted(DeltaTable(str(uri), version=0).to_pyarrow_table())
    partition = uri / f"ds={DAYS[-1].isoformat()}"
    stale, fresh = partition / "part-00000-killedrun000-old.parquet", partition / "part-00000-running0000-new.parquet"
    for orphan in (stale, fresh):
        pq.write_table(version0.slice(0, 5), orphan)
    month_ago = time.time() - 30 * 86400
    os.utime(stale, (month_ago, month_ago))

    proc = project.score("vacuum", "churn_vacuum", "--retention", "1h")
    assert proc.returncode == 2
    assert "retention 1h is shorter than the 7d this table promises" in proc.stderr

    proc = project.score("vacuum", "churn_vacuum", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files"] == [str(stale.relative_to(uri))]
    assert stale.exists()

    proc = project.score("vacuum", "churn_vacuum")
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists() and fresh.exists()
    assert _sorted(DeltaTable(str(uri), version=0).to_pyarrow_table()).equals(version0)
    assert DeltaTable(str(uri)).to_pyarrow_table().num_rows == ROWS_PER_DAY


def test_partition_fingerprints_follow_the_files(project):
    selection = select_input(str(project.data), ["ds"], "all")
    by_partition = selection.by_partition()
    assert list(by_partition) == [f"ds={d.isoformat()}" for d in DAYS]
    assert all(len(files) == 2 for files in by_partition.values())
    assert fingerprint(selection.files) == selection.fingerprint
    scored = {label: fingerprint(files) for label, files in by_partition.items()}
    scored.pop(f"ds={DAYS[1].isoformat()}")
    assert select_input(str(project.data), ["ds"], "unscored", scored).labels == [f"ds={DAYS[1].isoformat()}"]
    assert select_input(str(project.data), ["ds"], "unscored", {}).labels == list(by_partition)
    with pytest.raises(Exception, match="unscored"):
        select_input(str(project.data), ["ds"], "ds")


def test_undo_restores_only_while_its_commit_is_the_latest(tmp_path):
    import pyarrow as pa
    from deltalake import write_deltalake

    from jobs.tables.delta import undo_commit
    from jobs.tables.lineage import table_state

    uri = str(tmp_path / "t")
    write_deltalake(uri, pa.table({"x": [1, 2]}))
    write_deltalake(uri, pa.table({"x": [3]}), mode="append")
    assert undo_commit(uri, 1, 0, "run-a") is None
    assert DeltaTable(uri).version() == 2 and DeltaTable(uri).to_pyarrow_table().column("x").to_pylist() == [1, 2]

    write_deltalake(uri, pa.table({"x": [4]}), mode="append")  # "our" commit, version 3
    write_deltalake(uri, pa.table({"x": [5]}), mode="append")  # someone else's, version 4
    stuck = undo_commit(uri, 3, 2, "run-b")
    assert "version 3 holds this run's rows and could not be undone" in stuck
    assert DeltaTable(uri).version() == 4

    created = str(tmp_path / "created")
    write_deltalake(created, pa.table({"x": [1]}))
    assert undo_commit(created, 0, None, "run-c") is None
    assert DeltaTable(created).to_pyarrow_table().num_rows == 0
    assert table_state(created).walked == []
