"""Files of one input in other types (issue 20): cast to one type per column, not quarantined by a vote among
files; a value that does not fit fails its row, naming file and column; the quarantine table's types do not
depend on which files its first run read."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable

from tests.conftest import DAYS, ROWS_PER_DAY
from tests.stages.test_quarantine import reasons_by_id
from tests.test_end_to_end import onnx_scores

QUARANTINE = {"suite": "data_contracts/customers.json", "on_failure": "quarantine"}


def retype(project, day: dt.date, name: str, **changes) -> pa.Table:
    """Rewrite one input file with some columns in other types (`column=function of the column`); returns the
    file as written, read back as pyarrow reads it."""
    path = project.data / f"ds={day.isoformat()}" / name
    table = pq.read_table(path)
    for column, change in changes.items():
        table = table.set_column(table.schema.get_field_index(column), column, change(table.column(column)))
    pq.write_table(table, path)
    return pq.read_table(path)


def scores_by_id(project, tables: list[pa.Table]) -> dict[int, float]:
    """The model called directly on each file as written (its columns as floats and strings)."""
    out = {}
    for table in tables:
        _, probabilities = onnx_scores(project.models / "model.onnx", table)
        out.update(zip(table.column("customer_id").to_pylist(), probabilities.tolist()))
    return out


def assert_scores(table: pa.Table, expected: dict[int, float]) -> None:
    got = dict(zip(table.column("customer_id").to_pylist(), table.column("churn_probability").to_pylist()))
    assert set(got) == set(expected)
    ids = sorted(expected)
    np.testing.assert_allclose([got[i] for i in ids], [expected[i] for i in ids], rtol=1e-6, atol=1e-7)


def test_files_in_other_types_are_cast_to_one_type_per_column_and_scored(fresh_project):
    """Guards (issue 20): the type most files shared was the reference, and every file of another type
    (int32 for float64, dictionary or large_string for string, a timestamp in another unit or zone) was
    quarantined whole."""
    project = fresh_project
    before = pq.read_table(project.data).column("updated_at")
    retyped = [
        retype(
            project,
            DAYS[0],
            "part-0.parquet",
            monthly_charges=lambda c: pc.cast(pc.round(c), pa.int32()),
            age=lambda c: c.cast(pa.int32()),
            customer_id=lambda c: c.cast(pa.int32()),
            region=lambda c: c.dictionary_encode(),
            updated_at=lambda c: c.cast(pa.timestamp("ns", "Europe/Paris")),
        ),
        retype(
            project,
            DAYS[0],
            "part-1.parquet",
            region=lambda c: c.cast(pa.large_string()),
            plan_tier=lambda c: c.cast(pa.string_view()),
            updated_at=lambda c: c.cast(pa.timestamp("ms")),
        ),
        retype(project, DAYS[1], "part-0.parquet", tenure_months=lambda c: c.cast(pa.uint16())),
    ]
    assert retyped[0].schema.field("region").type == pa.dictionary(pa.int32(), pa.string())
    assert retyped[1].schema.field("plan_tier").type == pa.string_view()
    files = [pq.read_table(path) for path in sorted(project.data.glob("ds=*/*.parquet"))]  # as written

    job = project.job("retyped", contract=QUARANTINE)
    proc, plan = project.score_json("plan", str(job), "-p", "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert plan["input"]["schema_drift"] == {}
    day0 = project.data / f"ds={DAYS[0]}"
    assert plan["input"]["casts"] == {  # encodings (dictionary, large_string, units, zones) are not listed
        str(day0 / "part-0.parquet"): [
            "customer_id int32 -> int64",
            "age int32 -> int64",
            "monthly_charges int32 -> double",
        ],
        str(project.data / f"ds={DAYS[1]}" / "part-0.parquet"): ["tenure_months uint16 -> int64"],
    }

    code, summary = project.run(job, "all")
    assert code == 0, summary.get("error")
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_quarantined"]) == (3 * ROWS_PER_DAY,) * 2 + (0,)
    table = DeltaTable(summary["table_uri"]).to_pyarrow_table()
    assert table.schema.field("customer_id").type == pa.int64()
    assert_scores(table, scores_by_id(project, files))
    assert dt.datetime.fromisoformat(summary["input_watermark"]) == pc.max(before).as_py()

    code, report = project.validate(project.job("retyped", contract=QUARANTINE), "all")
    assert code == 0 and report["rows_failed"] == 0, report


def test_a_value_that_does_not_fit_the_columns_type_fails_its_row_naming_file_and_column(fresh_project):
    """Guards (issue 20): a file whose values mostly cast was quarantined whole: now only the values that do not
    fit (no int64 holds 2^64 - 1, no float 20 significant digits) fail their rows."""
    project = fresh_project
    day = DAYS[-1]

    def ages(column: pa.ChunkedArray) -> pa.Array:  # uint64 among int64 files: read as int64, value by value
        return pa.array([2**64 - 1] + column.to_pylist()[1:], pa.uint64())

    def charges(column: pa.ChunkedArray) -> pa.Array:
        values = [Decimal(f"{v:.2f}") for v in column.to_pylist()]
        values[1] = Decimal("1234.5678901234567891")  # 20 significant digits: no float holds it
        return pa.array(values, pa.decimal128(24, 16))

    written = retype(project, day, "part-1.parquet", age=ages, total_charges=charges)
    ids = written.column("customer_id").to_pylist()
    unfit = {
        ids[0]: "schema(age)=18446744073709551615 (uint64 in part-1.parquet) does not fit int64",
        ids[1]: "schema(total_charges)=Decimal('1234.5678901234567891') (decimal128(24, 16) in part-1.parquet) "
        "does not fit double",
    }

    code, summary = project.run(project.job("unfit"))  # on_failure: fail
    assert code == 3, summary.get("error")
    failures = summary["contract"]["failures"]
    assert failures["schema(age)"] == {"rows": 1, "examples": [unfit[ids[0]].split("=", 1)[1]]}
    assert failures["schema(total_charges)"]["rows"] == 1

    code, summary = project.run(project.job("unfit_q", contract=QUARANTINE))
    assert code == 0, summary.get("error")
    assert (summary["rows_scored"], summary["rows_quarantined"]) == (ROWS_PER_DAY - 2, 2)
    quarantine = DeltaTable(str(project.warehouse / "unfit_q__quarantine")).to_pyarrow_table()
    reasons = reasons_by_id(quarantine)
    assert set(reasons) == set(unfit)
    for cid, reason in unfit.items():
        assert reason in reasons[cid].split(";"), reasons[cid]
    row = {r["customer_id"]: r for r in quarantine.to_pylist()}
    assert (row[ids[0]]["age"], row[ids[1]]["total_charges"]) == (None, None)  # the value is in the reason
    assert row[ids[0]]["total_charges"] == float(written.column("total_charges")[0].as_py())
    assert set(quarantine.column("_source_file").to_pylist()) == {str(project.data / f"ds={day}" / "part-1.parquet")}

    scored = DeltaTable(summary["table_uri"]).to_pyarrow_table()
    rest = written.slice(2)
    rest = rest.set_column(rest.schema.get_field_index("age"), "age", rest.column("age").cast(pa.int64()))
    rest = rest.set_column(
        rest.schema.get_field_index("total_charges"), "total_charges", rest.column("total_charges").cast(pa.float64())
    )
    other = pq.read_table(project.data / f"ds={day}" / "part-0.parquet")
    assert_scores(scored, scores_by_id(project, [rest, other]))


def test_the_quarantine_table_keeps_its_types_whatever_files_a_run_reads(fresh_project):
    """Guards (issue 20): the quarantine table's schema was fixed by its first run; a later run over castable
    int32 files failed with "changed types" even while the table was empty."""
    project = fresh_project
    job = project.job("stable", contract=QUARANTINE)
    code, summary = project.run(job, f"ds={DAYS[0]}")
    assert (code, summary["rows_quarantined"]) == (0, 0), summary.get("error")
    quarantine = DeltaTable(str(project.warehouse / "stable__quarantine"))
    first = quarantine.schema().to_arrow()

    def too_old(column: pa.ChunkedArray) -> pa.Array:
        return pa.array([200] + column.to_pylist()[1:], pa.uint8())  # fails the contract: age 18..120

    narrow = {
        "monthly_charges": lambda c: pc.cast(pc.round(c), pa.int32()),
        "customer_id": lambda c: c.cast(pa.int32()),
        "updated_at": lambda c: c.cast(pa.timestamp("ns")),
        "region": lambda c: c.dictionary_encode(),
    }
    written = retype(project, DAYS[1], "part-0.parquet", age=lambda c: pa.array(c.to_pylist(), pa.int8()), **narrow)
    retype(project, DAYS[1], "part-1.parquet", age=too_old, **narrow)
    code, summary = project.run(job, f"ds={DAYS[1]}")
    assert code == 0, summary.get("error")
    assert (summary["rows_scored"], summary["rows_quarantined"]) == (ROWS_PER_DAY - 1, 1)
    quarantine = DeltaTable(str(project.warehouse / "stable__quarantine"))
    assert quarantine.schema().to_arrow() == first
    (row,) = quarantine.to_pyarrow_table().to_pylist()
    assert row["age"] == 200 and row["_reasons"][0]["expectation"] == "expect_column_values_to_be_between"
    fields = {f.name: f.type for f in pa.schema(first)}
    assert (fields["age"], fields["monthly_charges"], fields["customer_id"]) == (pa.int64(), pa.float64(), pa.int64())
    assert fields["updated_at"] == pa.timestamp("us", "UTC") and fields["region"] == pa.string()
    assert DeltaTable(summary["table_uri"]).to_pyarrow_table().num_rows == 2 * ROWS_PER_DAY - 1
    assert written.schema.field("customer_id").type == pa.int32()
