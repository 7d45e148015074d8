"""Partition values as pyarrow, Spark and delta-rs write them (issue 20): percent-encoded folder names, null as
`__HIVE_DEFAULT_PARTITION__`, a partition column whose name has a space. Guards: the table stored the encoded
text (`North%20East`), a selector of the value a person reads found nothing, and every re-score of such a
partition added another copy of its rows (its remove action named a path the log did not hold)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from deltalake import DeltaTable

from jobs import hive
from jobs.tools import synthetic

COLUMN = "sales area"  # a partition column whose name has a space
VALUES = ["North East", "a/b", "50%", "x=y", "Zürich", "a,b", "plain", "", None]
ROWS = 90  # 10 per value


def test_folder_names_are_pyarrows_both_ways(tmp_path):
    """hive.encode names every folder exactly as pyarrow's write_dataset does, and hive.decode reads each back
    to the value pyarrow reads (an empty value reads as null: Delta keeps none, Spark writes it as null)."""
    table = pa.table({"id": list(range(len(VALUES))), COLUMN: VALUES})
    ds.write_dataset(table, tmp_path, format="parquet", partitioning=[COLUMN], partitioning_flavor="hive")
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert folders == sorted({f"{COLUMN}={hive.encode(v)}" for v in VALUES} | {f"{COLUMN}="})
    for folder in folders:
        name, value = hive.parse(folder)
        assert name == COLUMN
        read = ds.dataset(tmp_path / folder, format="parquet").to_table().column("id").to_pylist()
        assert {VALUES[i] or None for i in read} == {value}
    assert hive.parse("sales%20area=North%20East") == (COLUMN, "North East")  # Spark encodes the name too
    assert hive.parse("no_equals_sign") is None


@pytest.fixture
def odd_input(fresh_project):
    """The day's customers, partitioned by COLUMN with every odd value, written by pyarrow's write_dataset."""
    project = fresh_project
    rows = synthetic.customers(ROWS, dt.date(2026, 11, 27))
    rows = rows.append_column(COLUMN, pa.array([VALUES[i % len(VALUES)] for i in range(ROWS)], pa.string()))
    ds.write_dataset(
        rows, project.root / "data" / "odd", format="parquet", partitioning=[COLUMN], partitioning_flavor="hive"
    )
    return project, rows


def test_odd_partition_values_score_once_and_rescore_in_place(odd_input):
    project, rows = odd_input
    job = project.job(
        "odd",
        input={
            "path": "data/odd",
            "partitioning": [COLUMN],
            "partitions": "all",
            "id_column": "customer_id",
            "event_time_column": "updated_at",
        },
        output={"table": "odd", "partition_by": [COLUMN]},
    )
    expected = {
        cid: (area or None)
        for cid, area in zip(rows.column("customer_id").to_pylist(), rows.column(COLUMN).to_pylist(), strict=True)
    }

    def table_rows() -> dict[int, str | None]:
        table = DeltaTable(str(project.warehouse / "odd")).to_pyarrow_table()
        ids = table.column("customer_id").to_pylist()
        assert len(ids) == len(set(ids)), "a row is in the table twice"
        return dict(zip(ids, table.column(COLUMN).to_pylist(), strict=True))

    code, first = project.run(job)  # on Ray
    assert code == 0, first["error"]
    assert first["rows_scored"] == ROWS
    assert table_rows() == expected
    inline = ("engine.inline_max_rows=1000000",)
    for value in dict.fromkeys(v or None for v in VALUES):
        # the value as a person reads it, except a comma (it separates selector terms) and null: their folder names
        selector = f"{COLUMN}={value}" if value and "," not in value else f"{COLUMN}={hive.encode(value)}"
        for _ in range(3):
            code, summary = project.run(job, partitions=selector, overrides=inline, force=True)
            assert code == 0, (selector, summary["error"])
            assert summary["rows_scored"] == sum(1 for v in expected.values() if v == value), selector
            assert table_rows() == expected, selector
    table = DeltaTable(str(project.warehouse / "odd"))
    live = pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()
    assert len(live) == len(dict.fromkeys(v or None for v in VALUES)), live  # one file per partition, none left over
    scored = table.to_pyarrow_table()
    nulls = scored.filter(pc.is_null(scored.column(COLUMN)))
    assert nulls.num_rows == sum(1 for v in expected.values() if v is None)
