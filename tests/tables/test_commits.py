"""Rows are never lost or duplicated by a commit: each test guards one hazard found in review (issue 8)."""

from __future__ import annotations

import onnx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from tests.conftest import DAYS, ROWS_PER_DAY
from tests.stages.test_quarantine import break_rows

DAY = DAYS[-1].isoformat()


def zoned_input(project) -> dict[tuple[str, str], int]:
    """Re-lay the project's two newest days as `ds=D/zone=Z` partitions (zone = customer_id parity)."""
    rows = {}
    for day in DAYS[-2:]:
        table = pq.read_table(project.data / f"ds={day.isoformat()}")
        parity = pc.bit_wise_and(table.column("customer_id"), 1)
        for zone, bit in (("a", 0), ("b", 1)):
            part = table.filter(pc.equal(parity, bit))
            folder = project.root / "data" / "zoned" / f"ds={day.isoformat()}" / f"zone={zone}"
            folder.mkdir(parents=True)
            pq.write_table(part, folder / "part-0.parquet")
            rows[(day.isoformat(), zone)] = part.num_rows
    return rows


def touch(project, day: str, zone: str) -> None:
    """Rewrite one input partition's file with the same rows: its fingerprint changes, so it is unscored."""
    path = project.root / "data" / "zoned" / f"ds={day}" / f"zone={zone}" / "part-0.parquet"
    table = pq.read_table(path)
    path.unlink()
    pq.write_table(table, path, compression="gzip")


@pytest.mark.parametrize("partition_by", [["ds"], ["ds", "zone"]])
def test_rescoring_some_input_partitions_keeps_every_other_row(fresh_project, partition_by):
    """Guards: an output partitioned more coarsely than the input (`[ds]` for input `[ds, zone]`) lost
    the other zones' rows of a re-scored day; and with `[ds, zone]` a re-score of (d1, a) and (d2, b)
    replaced the whole cross product d1/d2 x a/b, losing (d1, b) and (d2, a)."""
    project = fresh_project
    rows = zoned_input(project)
    job = project.job(
        "zoned",
        input__path="data/zoned",
        input__partitioning=["ds", "zone"],
        input__partitions="unscored",
        output__partition_by=partition_by,
    )
    code, first = project.run(job)
    assert code == 0, first["error"]
    assert first["rows_scored"] == sum(rows.values())

    (d1, d2) = (d.isoformat() for d in DAYS[-2:])
    touch(project, d1, "a")
    touch(project, d2, "b")
    code, second = project.run(job)
    assert code == 0, second["error"]
    assert second["partitions"] == [f"ds={d1}/zone=a", f"ds={d2}/zone=b"]
    assert second["rows_scored"] == rows[(d1, "a")] + rows[(d2, "b")]

    table = DeltaTable(second["table_uri"]).to_pyarrow_table()
    assert table.num_rows == sum(rows.values())
    assert pc.count_distinct(table.column("customer_id")).as_py() == table.num_rows
    for (day, zone), count in rows.items():
        part = table.filter(pc.and_(pc.equal(table.column("ds"), day), pc.equal(table.column("zone"), zone)))
        assert part.num_rows == count
        rescored = (day, zone) in ((d1, "a"), (d2, "b"))
        assert set(part.column("run_id").to_pylist()) == {second["run_id"] if rescored else first["run_id"]}

    code, third = project.run(job)
    assert (code, third["status"]) == (0, "up_to_date"), "the unscored bookkeeping must stay true"


def test_append_with_unscored_is_refused_at_plan_time(fresh_project):
    """Guards: `mode: append` with `unscored` appended a second copy of every re-scored partition."""
    project = fresh_project
    job = project.job("appendix", output__mode="append", input__partitions="unscored")
    code, summary = project.run(job)
    assert code == 2
    assert (
        "append" in summary["error"] and "unscored" in summary["error"] and "overwrite_partitions" in summary["error"]
    )
    assert not (project.warehouse / "appendix").exists()


def test_a_failure_after_the_commit_landed_deletes_no_committed_file(fresh_project, monkeypatch):
    """Guards: a failure (or Ctrl-C, SIGTERM) right after the Delta commit landed made the cleanup delete
    the files the committed version references, leaving a table version that cannot be read."""
    import jobs.tables.delta

    real_commit = jobs.tables.delta.commit

    def commit_then_interrupted(*args, **kwargs):
        real_commit(*args, **kwargs)
        raise KeyboardInterrupt  # e.g. SIGTERM arriving just after the commit

    monkeypatch.setattr(jobs.tables.delta, "commit", commit_then_interrupted)
    project = fresh_project
    job = project.job("landed")
    with pytest.raises(KeyboardInterrupt):
        project.run(job)
    table = DeltaTable(str(project.warehouse / "landed"))
    assert table.version() == 0
    assert table.to_pyarrow_table().num_rows == ROWS_PER_DAY


def test_a_rerun_repairs_a_run_that_died_between_its_two_commits(fresh_project, monkeypatch):
    """Guards: a driver that died after the quarantine commit and before the output commit left its
    quarantine rows behind, and the re-run added them a second time."""
    import jobs.commands.run
    import jobs.tables.delta

    project = fresh_project
    bad = break_rows(project)
    job = project.job(
        "halfway",
        output__mode="append",
        contract={"suite": "data_contracts/customers.json", "on_failure": "quarantine", "max_bad_rows": 10},
    )
    real_commit = jobs.tables.delta.commit

    def die_before_output(target, *args, **kwargs):
        if not target.uri.endswith("__quarantine"):
            raise KeyboardInterrupt  # the driver is killed: nothing after this runs
        return real_commit(target, *args, **kwargs)

    monkeypatch.setattr(jobs.tables.delta, "commit", die_before_output)
    monkeypatch.setattr(jobs.tables.delta, "undo_commit", lambda *args: None)  # a killed driver undoes nothing
    with pytest.raises(KeyboardInterrupt):
        project.run(job, partitions=f"ds={DAY}")
    quarantine = DeltaTable(str(project.warehouse / "halfway__quarantine"))
    assert quarantine.to_pyarrow_table().num_rows == len(bad)
    monkeypatch.undo()

    code, summary = project.run(job, partitions=f"ds={DAY}")
    assert code == 0, summary["error"]
    assert summary["rows_quarantined"] == len(bad)
    rows = DeltaTable(str(project.warehouse / "halfway__quarantine")).to_pyarrow_table()
    assert sorted(rows.column("customer_id").to_pylist()) == sorted(bad)
    assert set(rows.column("run_id").to_pylist()) == {summary["run_id"]}
    assert DeltaTable(summary["table_uri"]).to_pyarrow_table().num_rows == ROWS_PER_DAY - len(bad)


def test_a_run_key_whose_commit_was_superseded_scores_again(fresh_project, tmp_path):
    """Guards: champion, then challenger into the same partition, then champion again without --force
    answered `already_committed` while every row held the challenger's scores."""
    project = fresh_project
    challenger = tmp_path / "challenger.onnx"
    model = onnx.load(str(project.models / "model.onnx"))
    model.doc_string = "challenger: same graph, another file"
    onnx.save(model, str(challenger))

    job = project.job("superseded")
    code, champion = project.run(job)
    assert code == 0, champion["error"]
    code, other = project.run(job, overrides=(f"model.uri={challenger}",))
    assert code == 0, other["error"]
    assert other["model_version"] != champion["model_version"]

    code, again = project.run(job)
    assert code == 0, again["error"]
    assert again["status"] == "succeeded" and again["table_version"] == 2
    table = DeltaTable(again["table_uri"]).to_pyarrow_table()
    assert set(table.column("model_version").to_pylist()) == {champion["model_version"]}

    code, retry = project.run(job)
    assert (code, retry["status"], retry["table_version"]) == (0, "already_committed", 2)


def test_the_overlap_check_and_the_commit_are_one_atomic_step(tmp_path, monkeypatch):
    """Guards: another run's append that landed between the overlap check and the commit went unnoticed,
    and both runs committed the same partition."""
    import jobs.tables.delta
    from jobs.stages.sink import write_file
    from jobs.tables.delta import TableTarget, commit

    target = TableTarget(str(tmp_path / "t"), pa.schema([("id", pa.int64()), ("ds", pa.string())]), ("ds",), ("ds",))
    rows = pa.table({"id": [1, 2], "ds": ["d1", "d1"]})

    def files(run_id: str) -> list[dict]:
        return [write_file(target, {"ds": "d1"}, rows, run_id, 0)]

    def metadata(run_id: str) -> dict:
        return {"score.run_id": run_id, "score.partitions": "ds=d1", "score.job": "j"}

    assert commit(target, files("run-first-0001"), [], metadata("run-first-0001")) == 0
    plan_saw = TableTarget(target.uri, target.schema, target.partition_by, target.input_partitioning, read_version=0)
    real_check = jobs.tables.delta._check_no_overlap
    raced = []

    def check_then_lose_the_race(table, *args):
        real_check(table, *args)
        if not raced:  # another run appends the same partition right after this run's check
            raced.append("racing")
            raced[0] = commit(plan_saw, files("run-other-0003"), [], metadata("run-other-0003"))

    monkeypatch.setattr(jobs.tables.delta, "_check_no_overlap", check_then_lose_the_race)
    with pytest.raises(jobs.tables.delta.RuntimeFailure, match="run-other-0003"):
        commit(plan_saw, files("run-late-00002"), [], metadata("run-late-00002"))
    assert raced == [1]
    table = DeltaTable(target.uri)
    assert table.version() == 1 and table.to_pyarrow_table().num_rows == 4


def test_written_row_counts_are_the_rows_in_the_files(tmp_path, monkeypatch):
    """Guards: the row-count invariant counted rows before they were split into files, so a group lost
    in the split would still have passed the check."""
    import jobs.stages.sink
    from jobs.columns import DEVICE, REASON_TYPE, REASONS, RUN_ID
    from jobs.stages.sink import TableWriter
    from jobs.tables.delta import TableTarget

    schema = pa.schema([("id", pa.int64()), ("ds", pa.string()), (RUN_ID, pa.string())])  # the writer stamps the id
    target = TableTarget(str(tmp_path / "t"), schema, ("ds",), ("ds",))
    block = pa.table(
        {
            "id": [1, 2, 3],
            "ds": ["d1", "d1", "d2"],
            REASONS: pa.nulls(3, REASON_TYPE),
            DEVICE: pa.array(["cpu"] * 3).dictionary_encode(),
        }
    )
    real_groups = jobs.stages.sink._groups
    monkeypatch.setattr(jobs.stages.sink, "_groups", lambda table, columns: list(real_groups(table, columns))[:1])

    written = TableWriter(target, None, "fail", "run-count-0001").write([block], task=0)
    assert written.rows_seen == 3
    assert written.rows_scored == sum(f["rows"] for f in written.files) < 3


def test_commit_every_commits_groups_and_a_rerun_of_its_key_scores_only_the_groups_not_committed(fresh_project):
    """`output.commit_every: 1` over three days: one version per day under one run id and run key. The newest
    day fails the contract: the two days before it stay committed, and the same run key, once the policy
    quarantines, scores only that day; a third run of the key is a no-op."""
    from jobs.tables.lineage import history

    project = fresh_project
    bad = break_rows(project)  # three rows of the newest day
    key = "nightly-groups"
    job = project.job("groups", output__commit_every=1)
    code, failed = project.run(job, "all", run_key=key)
    assert code == 3, failed["error"]
    assert failed["table_versions"] == [0, 1]
    assert (failed["rows_scored"], failed["rows_quarantined"]) == (2 * ROWS_PER_DAY, 0)  # committed rows only
    assert (
        f"partitions ds={DAY} were not committed; the groups committed before them stay (groups v0, v1), "
        f"and a re-run with run key {key} scores only what is missing"
    ) in failed["error"]
    uri = failed["table_uri"]
    table = DeltaTable(uri).to_pyarrow_table(columns=["ds"])
    assert sorted(set(table.column("ds").to_pylist())) == [d.isoformat() for d in DAYS[:2]]
    assert table.num_rows == 2 * ROWS_PER_DAY
    commits = [c for c in history(uri) if "score.run_id" in c]
    assert [(c["score.run_id"], c["score.run_key"], c["score.partitions"]) for c in commits] == [
        (failed["run_id"], key, f"ds={d.isoformat()}") for d in DAYS[:2]
    ]

    job = project.job(
        "groups",
        output__commit_every=1,
        contract={"suite": "data_contracts/customers.json", "on_failure": "quarantine"},
    )
    code, resumed = project.run(job, "all", run_key=key)
    assert code == 0, resumed["error"]
    assert (resumed["partitions"], resumed["table_versions"]) == ([f"ds={DAY}"], [2])
    assert resumed["message"] == (
        f"resumed run key {key}: 2 of its partitions were committed as groups v0, v1 by "
        f"run {failed['run_id']}; scoring the other 1"
    )
    assert (resumed["rows_in"], resumed["rows_scored"], resumed["rows_quarantined"]) == (
        ROWS_PER_DAY,
        ROWS_PER_DAY - len(bad),
        len(bad),
    )
    ids = DeltaTable(uri).to_pyarrow_table(columns=["customer_id"]).column("customer_id").to_pylist()
    assert len(ids) == len(set(ids)) == 3 * ROWS_PER_DAY - len(bad)
    assert not set(bad) & set(ids)

    code, again = project.run(job, "all", run_key=key)
    assert (code, again["status"], again["table_versions"], again["table_version"]) == (
        0,
        "already_committed",
        [0, 1, 2],
        2,
    )
    assert f"already committed as groups v0, v1, v2 by run {resumed['run_id']}, {failed['run_id']}" in again["message"]


def test_commit_every_is_refused_for_append(fresh_project):
    from jobs.errors import SpecError
    from jobs.spec.load import load_spec

    job = fresh_project.job("groups_append", output__mode="append", output__commit_every=2)
    with pytest.raises(SpecError) as refused:
        load_spec(job)
    assert "output.commit_every: needs output.mode overwrite_partitions" in str(refused.value)


def test_a_failed_first_run_leaves_no_folder_behind(fresh_project):
    """Guards: a first run failing its contract deleted its files but left `warehouse/<table>/ds=D/` folders
    without a Delta log, on which readers failed with "No files in log segment" instead of "no table"."""
    project = fresh_project
    break_rows(project)
    code, summary = project.run(project.job("never_made"), "all")
    assert code == 3, summary["error"]
    assert not (project.warehouse / "never_made").exists()
    assert not (project.warehouse / "never_made__quarantine").exists()
