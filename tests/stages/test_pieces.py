"""Partitions checked in pieces (issue 22): every verdict and every quarantined row is the one the whole-partition
check gives, however many pieces the row groups make, on Ray (tally tasks, hash-bucketed keys) and inline.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from jobs.plan.plan import make_plan
from jobs.spec.load import load_spec
from tests.conftest import DAYS, ROWS_PER_DAY

LATEST, PREVIOUS = DAYS[-1].isoformat(), DAYS[-2].isoformat()
ROW_GROUP = 400  # rows: each 3,000-row file holds 8 row groups, so `engine.piece_bytes=1` makes 8 pieces of it


def rewrite(path, changes: dict[str, dict[int, object]]) -> None:
    """The file with `changes` (column -> row -> value), written again in small row groups, as Spark might."""
    table = pq.read_table(path)
    for column, rows in changes.items():
        values = table.column(column).to_pylist()
        for i, value in rows.items():
            values[i] = value
        index = table.schema.get_field_index(column)
        table = table.set_column(index, table.schema.field(column), pa.array(values, table.schema.field(column).type))
    pq.write_table(table, path, row_group_size=ROW_GROUP)


def test_pieces_give_the_whole_partitions_verdicts(fresh_project):
    project = fresh_project
    latest = [project.data / f"ds={LATEST}" / f"part-{i}.parquet" for i in (0, 1)]
    previous = project.data / f"ds={PREVIOUS}" / "part-0.parquet"
    ids = pq.read_table(latest[0]).column("customer_id").to_pylist()
    other_day_id = pq.read_table(previous).column("customer_id")[7].as_py()
    rewrite(
        latest[0],
        {
            "customer_id": {2999: ids[5]},  # a duplicate between row groups 0 and 7: different pieces
            "age": {i: 7 for i in range(10, 15)},  # 5 of 6,000 rows: within mostly 0.999
            "tenure_months": {i: -1 for i in range(1000, 1010)},  # 10 of 6,000: beyond mostly 0.999
        },
    )
    # ids[5] a third time, in the other file; one id of the previous day: only a duplicate within its partition
    rewrite(latest[1], {"customer_id": {17: ids[5], 2500: other_day_id}, "satisfaction": {1234: 9}})
    rewrite(previous, {"customer_id": {8: other_day_id}})
    suite = project.root / "data_contracts" / "pieces.json"
    suite.write_text(
        json.dumps(
            {
                "name": "pieces",
                "expectations": [
                    {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "customer_id"}},
                    {
                        "type": "expect_column_values_to_be_between",
                        "kwargs": {"column": "age", "min_value": 18, "max_value": 120, "mostly": 0.999},
                    },
                    {
                        "type": "expect_column_values_to_be_between",
                        "kwargs": {"column": "tenure_months", "min_value": 0, "max_value": 600, "mostly": 0.999},
                    },
                    {
                        "type": "expect_column_values_to_be_between",
                        "kwargs": {"column": "satisfaction", "min_value": 1, "max_value": 5},
                    },
                    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "customer_id"}},
                ],
            }
        )
    )
    contract = {
        "suite": "data_contracts/pieces.json",
        "on_failure": "quarantine",
        "max_bad_fraction": 1.0,
        "batch_level": ["expect_column_values_to_be_between(satisfaction)"],
    }
    results = {}
    for name, piece_bytes, inline in (("whole", 0, False), ("ray", 1, False), ("inline", 1, True)):
        job = project.job(
            f"pieces_{name}",
            input__partitions=f"ds={PREVIOUS}..{LATEST}",
            contract=contract,
            engine={"piece_bytes": piece_bytes, "inline_max_rows": 10**9 if inline else 0},
        )
        with project.environment():
            pieces = make_plan(load_spec(job)).checks.pieces
        # the two partitions' 4 files: 3 of them rewritten in 8 row groups each
        assert len(pieces) == (2 if piece_bytes == 0 else 3 * 8 + 1), name
        code, summary = project.run(job)
        assert code == 0, summary["error"]
        # where the time went: the driver's phases, and the stages' busy seconds (a first pass only in pieces);
        # `start` is the driver's wait for Ray, which starts while MLflow loads: nothing when it was ready first
        phases = summary["seconds"]
        assert {"plan", "track", "pipeline", "commit", "record"} <= phases.keys()
        assert all(spent > 0 for phase, spent in phases.items() if phase != "start")
        assert ("start" in phases) == (not inline) and phases.get("start", 0) >= 0
        assert sum(summary["seconds"].values()) <= summary["duration_s"] * 1.01 + 0.01
        busy = {stage for stage, spent in summary["busy_seconds"].items() if spent > 0}
        assert busy == {"check", "score", "write"} | ({"tally"} if piece_bytes else set()), name
        quarantined = DeltaTable(str(project.warehouse / f"pieces_{name}__quarantine")).to_pyarrow_table()
        rows = sorted(
            (row["ds"], row["customer_id"], json.dumps(row["_reasons"], sort_keys=True))
            for row in quarantined.select(["ds", "customer_id", "_reasons"]).to_pylist()
        )
        scored = DeltaTable(str(project.warehouse / f"pieces_{name}")).to_pyarrow_table(columns=["customer_id"])
        report = project.validate(job)[1]
        results[name] = (
            summary["rows_scored"],
            summary["rows_quarantined"],
            rows,
            sorted(scored.column(0).to_pylist()),
        )
        results[name] += (report["rows_failed"], [(e["column"], e["rows_failed"]) for e in report["expectations"]])

    whole = results["whole"]
    # the latest day fails whole on the batch-level expectation (1 row of 6,000 broke it); the previous day
    # quarantines its duplicate id twice; age is within `mostly`, tenure is not (and is counted beside the rest)
    assert whole[:2] == (ROWS_PER_DAY - 2, ROWS_PER_DAY + 2)
    by_day = {}
    for ds, customer, reasons in whole[2]:
        by_day.setdefault(ds, []).append((customer, json.loads(reasons)))
    assert sorted(c for c, _ in by_day[PREVIOUS]) == [other_day_id, other_day_id]
    duplicates = [c for c, reasons in by_day[LATEST] if any("unique" in r["expectation"] for r in reasons)]
    assert sorted(duplicates) == [ids[5]] * 3
    tenure = [c for c, reasons in by_day[LATEST] if any(r["column"] == "tenure_months" for r in reasons)]
    assert len(tenure) == 10 and not any(r["column"] == "age" for _, rs in by_day[LATEST] for r in rs)
    held = {r["value"] for _, rs in by_day[LATEST] for r in rs if r["column"] == "satisfaction"}
    assert held == {"9", f"batch failed: 1 of {ROWS_PER_DAY} rows"}
    assert results["ray"] == whole
    assert results["inline"] == whole

    # Great Expectations' own engine: partitions stay whole, read in one piece, never batch by batch
    job = project.job(
        "pieces_gx",
        input__partitions=f"ds={PREVIOUS}..{LATEST}",
        contract={**contract, "engine": "gx"},
        engine={"piece_bytes": 1, "inline_max_rows": 0},
        scoring={"batch_size": 500, "actors": {"min": 1, "max": 2}},
    )
    with project.environment():
        assert len(make_plan(load_spec(job)).checks.pieces) == 2
    code, summary = project.run(job)
    assert code == 0, summary["error"]
    assert (summary["rows_scored"], summary["rows_quarantined"]) == whole[:2]
    quarantined = DeltaTable(str(project.warehouse / "pieces_gx__quarantine")).to_pyarrow_table()
    failed = sorted(
        (row["ds"], row["customer_id"], tuple(sorted(r["expectation"] + r["column"] for r in row["_reasons"])))
        for row in quarantined.select(["ds", "customer_id", "_reasons"]).to_pylist()
    )
    assert failed == sorted(
        (ds, customer, tuple(sorted(r["expectation"] + r["column"] for r in json.loads(reasons))))
        for ds, customer, reasons in whole[2]
    )


def test_equal_keys_share_a_bucket_in_pieces_with_and_without_nulls():
    """numpy holds an integer column as floats, and a boolean one as objects, in a piece that has a null: equal
    keys hashed from those landed in different buckets, and a duplicate across pieces went unseen on Ray."""
    from jobs.stages.checking import bucket_of

    for kind, value, other in ((pa.int64(), 7, 8), (pa.bool_(), True, False), (pa.string(), "a", "b")):
        plain = bucket_of(pa.array([value, other], kind), 8)
        with_null = bucket_of(pa.array([value, None], kind), 8)
        assert plain[0] == with_null[0], kind
