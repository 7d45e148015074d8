"""Output files of a target size with column statistics, and `score optimize` (issue 10)."""

from __future__ import annotations

import datetime as dt
import json
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from jobs.stages.sink import file_stats
from tests.conftest import DAYS, ROWS_PER_DAY
from tests.stages.test_quarantine import break_rows
from tests.tables.test_commits import zoned_input

SMALL_MB = 0.05  # about 1/13 of a day's scored rows: many small files


def add_actions(uri: str, version: int | None = None) -> pa.Table:
    return pa.table(DeltaTable(uri, version=version).get_add_actions(flatten=True))


def contents(uri: str, version: int | None = None) -> pa.Table:
    return DeltaTable(uri, version=version).to_pyarrow_table().sort_by([("customer_id", "ascending")])


def score_json(project, *args: str):
    proc = project.score(*args, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_files_have_the_target_size_and_statistics_that_let_readers_skip_them(fresh_project):
    project = fresh_project
    code, small = project.run(project.job("small", output__target_file_mb=SMALL_MB, input__partitions="all"))
    assert code == 0, small["error"]
    code, default = project.run(project.job("default_size", input__partitions="all"))
    assert code == 0, default["error"]

    # The default target holds a whole day of this data: one file per input partition, not one per batch.
    assert sorted(add_actions(default["table_uri"]).column("partition.ds").to_pylist()) == [d.isoformat() for d in DAYS]

    actions = add_actions(small["table_uri"])
    per_day = {day: actions.column("partition.ds").to_pylist().count(day.isoformat()) for day in DAYS}
    assert all(count >= 5 for count in per_day.values()), per_day
    assert sum(actions.column("num_records").to_pylist()) == 3 * ROWS_PER_DAY

    # Every data column's statistics are the file's own min/max/null count (timestamps widened to whole ms).
    for action in actions.to_pylist():
        data = pq.read_table(f"{small['table_uri']}/{action['path']}")
        assert action["num_records"] == data.num_rows
        for column in ("customer_id", "churn_probability", "churn_label", "run_id", "model_version"):
            bounds = pc.min_max(data.column(column)).as_py()
            assert (action[f"min.{column}"], action[f"max.{column}"]) == (bounds["min"], bounds["max"]), column
            assert action[f"null_count.{column}"] == 0
        bounds = pc.min_max(data.column("scored_at")).as_py()
        assert action["min.scored_at"] <= bounds["min"] <= bounds["max"] <= action["max.scored_at"]
        assert action["max.scored_at"] - action["min.scored_at"] < bounds["max"] - bounds["min"] + dt.timedelta(
            milliseconds=2
        )

    # A filtered scan opens only the files whose statistics admit the value, and reads the same rows.
    wanted = actions.column("min.customer_id")[len(actions) // 2].as_py()
    admits = {a["path"] for a in actions.to_pylist() if a["min.customer_id"] <= wanted <= a["max.customer_id"]}
    dataset = DeltaTable(small["table_uri"]).to_pyarrow_dataset()
    opened = {f.path for f in dataset.get_fragments(filter=ds.field("customer_id") == wanted)}
    assert {path.rsplit("/", 2)[-2] + "/" + path.rsplit("/", 1)[-1] for path in opened} == admits
    assert len(admits) < len(actions) // 3
    row = dataset.to_table(filter=ds.field("customer_id") == wanted)
    assert row.num_rows == 1 and row.column("customer_id")[0].as_py() == wanted
    # Past the newest scored_at by more than the statistics' rounding up (1 ms) plus delta-rs's own (1 ms).
    late = pc.max(dataset.to_table().column("scored_at")).as_py() + dt.timedelta(milliseconds=3)
    assert list(dataset.get_fragments(filter=ds.field("scored_at") > late)) == []
    assert list(dataset.get_fragments(filter=ds.field("model_version") == "sha256:other")) == []


def test_optimize_compacts_small_files_and_every_reader_and_rerun_still_works(fresh_project):
    project = fresh_project
    job = project.job("churn", output__target_file_mb=SMALL_MB)
    runs = []
    for day in DAYS:  # one run per day: three versions of many small files
        code, summary = project.run(job, partitions=f"ds={day.isoformat()}")
        assert code == 0, summary["error"]
        runs.append(summary)
    uri = runs[-1]["table_uri"]
    before, files_before = contents(uri), len(add_actions(uri))
    assert files_before >= 15

    done = score_json(project, "optimize", "churn")
    assert done["version_before"] == 2 and done["version"] == 3
    assert (done["files_before"], done["files_after"]) == (files_before, 3)  # one file per day
    assert done["rows_before"] == done["rows_after"] == 3 * ROWS_PER_DAY
    assert contents(uri).equals(before)  # same rows, same scores, same lineage columns
    assert contents(uri, version=2).equals(before)  # time travel to the small files still works
    compacted = add_actions(uri)
    assert compacted.column("min.customer_id").null_count == 0  # delta-rs wrote statistics for the new files

    again = score_json(project, "optimize", "churn")
    assert again["version"] == again["version_before"] == 3 and again["files_added"] == 0

    history = score_json(project, "history", "churn")
    assert (history[0]["version"], history[0]["operation"], history[0]["role"]) == (3, "OPTIMIZE", "optimize")
    assert [row["run_id"] for row in history[1:]] == [r["run_id"] for r in reversed(runs)]
    lineage = score_json(project, "lineage", "churn")
    assert sorted(run["run_id"] for run in lineage["runs"]) == sorted(r["run_id"] for r in runs)
    query = score_json(project, "query", "SELECT ds, count(*) AS n FROM churn GROUP BY ds ORDER BY ds")
    assert query == [{"ds": d.isoformat(), "n": ROWS_PER_DAY} for d in DAYS]
    old = score_json(project, "query", "SELECT count(*) AS n FROM churn", "--version", "0")
    assert old == [{"n": ROWS_PER_DAY}]

    # A re-run of one input partition after the compaction replaces exactly that partition's rows.
    day = DAYS[1].isoformat()
    code, rerun = project.run(job, partitions=f"ds={day}", force=True)
    assert code == 0, rerun["error"]
    after = contents(uri)
    assert after.num_rows == 3 * ROWS_PER_DAY
    assert pc.count_distinct(after.column("customer_id")).as_py() == after.num_rows
    for summary, d in zip(runs, DAYS):
        rows = after.filter(pc.equal(after.column("ds"), d.isoformat()))
        assert rows.num_rows == ROWS_PER_DAY
        assert set(rows.column("run_id").to_pylist()) == {
            rerun["run_id"] if d.isoformat() == day else summary["run_id"]
        }
    unchanged = before.drop_columns(["run_id", "scored_at"])
    assert after.drop_columns(["run_id", "scored_at"]).equals(unchanged)  # same model: the same scores


def test_optimize_refuses_a_table_whose_input_partitions_are_finer_than_its_files(fresh_project):
    project = fresh_project
    zoned_input(project)
    job = project.job(
        "zoned",
        input__path="data/zoned",
        input__partitioning=["ds", "zone"],
        input__partitions="all",
        output__partition_by=["ds"],
        output__target_file_mb=SMALL_MB,
    )
    code, summary = project.run(job)
    assert code == 0, summary["error"]
    files = len(add_actions(summary["table_uri"]))

    proc = project.score("optimize", "zoned")
    assert proc.returncode == 2
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("score: error: optimize ") and "['zone']" in message
    assert "output.partition_by: ['ds', 'zone']" in message
    table = DeltaTable(summary["table_uri"])
    assert (table.version(), len(table.file_uris())) == (0, files)


def test_file_statistics_bound_every_column_and_are_never_narrower_than_the_data():
    moments = [
        dt.datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 27, 11, 0, 0, 999001, tzinfo=dt.UTC),
    ]
    data = pa.table(
        {
            "id": pa.array([3, None, 7], pa.int64()),
            "score": pa.array([0.25, 0.5, 0.75], pa.float32()),
            "odd": pa.array([0.5, float("nan"), float("inf")]),
            "at": pa.array([moments[0], None, moments[1]], pa.timestamp("us", tz="UTC")),
            "local": pa.array([dt.datetime(2026, 1, 1, 0, 0, 0, 1)] * 3, pa.timestamp("ns")),
            "day": pa.array([dt.date(2026, 11, 27)] * 3),
            "long": pa.array(["b" * 300, "a" * 300, "c"]),
            "zone": pa.array(["a"] * 3),
            "flag": pa.array([True, False, None]),
            "none": pa.nulls(3, pa.int64()),
            "tags": pa.array([["a"], [], None]),
        }
    )
    stats = file_stats(data, {"zone": "a"})
    big = sys.float_info.max
    assert stats["numRecords"] == 3
    assert stats["minValues"] == {
        "id": 3,
        "score": 0.25,
        "odd": 0.5,
        "at": "2026-11-27T10:00:00.123Z",
        "local": "2026-01-01T00:00:00.000",
        "day": "2026-11-27",
        "long": "a" * 256,
        "zone": "a",
        "flag": False,
    }
    assert stats["maxValues"] == {
        "id": 7,
        "score": 0.75,
        "odd": big,
        "at": "2026-11-27T11:00:01.000Z",
        "local": "2026-01-01T00:00:00.001",
        "day": "2026-11-27",
        "long": "c",
        "zone": "a",
        "flag": True,
    }
    assert stats["nullCount"] == {
        "id": 1,
        "score": 0,
        "odd": 0,
        "at": 1,
        "local": 0,
        "day": 0,
        "long": 0,
        "zone": 0,
        "flag": 1,
        "none": 3,
    }
    json.dumps(stats, allow_nan=False)
    assert file_stats(pa.table({"long": ["b" * 300]}), {})["maxValues"] == {"long": "b" * 256 + "\U0010ffff"}

    # A column whose type has no bound in Delta's JSON: no bounds at all (bar the input partition's).
    priced = data.append_column("price", pa.array([1, 2, 3], pa.decimal128(10, 2)))
    assert file_stats(priced.drop_columns(["zone"]), {}).keys() == {"numRecords", "nullCount"}
    assert file_stats(priced, {"zone": "a"})["minValues"] == {"zone": "a"}


def test_a_filter_on_any_column_reads_exactly_the_matching_rows(tmp_path):
    """delta-rs's pyarrow dataset (what `score query` and DuckDB read) took a column missing from the
    statistics for one no row can match: `WHERE customer_id = 42` returned nothing."""
    from jobs.stages.sink import write_file
    from jobs.tables.delta import TableTarget, commit

    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("ok", pa.bool_()),
            ("x", pa.float64()),
            ("name", pa.string()),
            ("at", pa.timestamp("us", tz="UTC")),
            ("ds", pa.string()),
        ]
    )
    target = TableTarget(str(tmp_path / "t"), schema, ("ds",), ("ds",))
    rows = pa.table(
        {
            "id": [1, 2, 3, 4],
            "ok": [True, False, None, True],
            "x": [0.5, float("nan"), None, 2.0],
            "name": ["a" * 400, "b", None, "c"],
            "at": pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.UTC)] * 4, schema.field("at").type),
            "ds": ["d1", "d1", "d2", "d2"],
        },
        schema=schema,
    )
    files = [
        write_file(target, {"ds": day}, rows.filter(pc.equal(rows.column("ds"), day)), "run-filters-01", 0)
        for day in ("d1", "d2")
    ]
    commit(target, files, [], {"score.partitions": "ds=d1,ds=d2", "score.run_id": "run-filters-01"})
    dataset = DeltaTable(target.uri).to_pyarrow_dataset()
    for where in (
        ds.field("id") == 2,
        ds.field("ok") == True,  # noqa: E712
        ds.field("x") > 1.0,
        ds.field("name") == "a" * 400,
        ds.field("name").is_null(),
        ds.field("at") >= rows.column("at")[0],
    ):
        matching = sorted(dataset.to_table(filter=where).column("id").to_pylist())
        assert matching and matching == sorted(dataset.to_table().filter(where).column("id").to_pylist()), str(where)


def test_optimize_refuses_a_quarantine_table_holding_a_dead_runs_rows(fresh_project, monkeypatch):
    """A re-run finds a dead run's quarantined rows by file name; compacting them first would hide them."""
    import jobs.tables.delta

    project = fresh_project
    break_rows(project)
    job = project.job(
        "halfway", contract={"suite": "data_contracts/customers.json", "on_failure": "quarantine", "max_bad_rows": 10}
    )
    real_commit = jobs.tables.delta.commit

    def die_before_output(target, *args, **kwargs):
        if not target.uri.endswith("__quarantine"):
            raise KeyboardInterrupt  # the driver is killed between its two commits
        return real_commit(target, *args, **kwargs)

    monkeypatch.setattr(jobs.tables.delta, "commit", die_before_output)
    monkeypatch.setattr(jobs.tables.delta, "undo_commit", lambda *args: None)
    with pytest.raises(KeyboardInterrupt):
        project.run(job)
    monkeypatch.undo()

    proc = project.score("optimize", "halfway__quarantine")
    assert proc.returncode == 2
    message = proc.stderr.strip().splitlines()[-1]
    assert "whose output commit never landed" in message and "run key" in message
    assert DeltaTable(str(project.warehouse / "halfway__quarantine")).version() == 0
