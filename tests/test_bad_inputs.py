"""The bad-input catalogue: each kind of broken input ends in a clear outcome, with exact row counts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from tests.conftest import DAYS, ROWS_PER_DAY
from tests.stages.test_quarantine import reasons_by_id
from tests.test_end_to_end import onnx_scores

DAY = DAYS[-1].isoformat()
QUARANTINE = {"suite": "data_contracts/customers.json", "on_failure": "quarantine"}


def rewrite(project, name: str, change) -> pa.Table:
    path = project.data / f"ds={DAY}" / name
    table = change(pq.read_table(path))
    pq.write_table(table, path)
    return table


def set_values(table: pa.Table, column: str, changes: dict[int, object], type_=None) -> pa.Table:
    values = table.column(column).to_pylist()
    for i, v in changes.items():
        values[i] = v
    return table.set_column(
        table.schema.get_field_index(column), column, pa.array(values, type_ or table.schema.field(column).type)
    )


def test_null_model_inputs_are_quarantined_even_where_the_contract_allows_them(fresh_project):
    project = fresh_project
    table = rewrite(
        project,
        "part-0.parquet",
        lambda t: set_values(set_values(t, "age", {1: None}), "monthly_charges", {2: float("nan"), 3: None}),
    )
    ids = table.column("customer_id").to_pylist()
    code, summary = project.run(project.job("nulls", contract=QUARANTINE))
    assert code == 0, summary.get("error")
    assert (summary["rows_scored"], summary["rows_quarantined"]) == (ROWS_PER_DAY - 3, 3)
    quarantine = DeltaTable(str(project.warehouse / "nulls__quarantine")).to_pyarrow_table()
    assert reasons_by_id(quarantine) == {
        ids[1]: "model_input_not_null(age)=null",
        ids[2]: "model_input_not_null(monthly_charges)=null",
        ids[3]: "model_input_not_null(monthly_charges)=null",
    }
    scores = DeltaTable(summary["table_uri"]).to_pyarrow_table().column("churn_probability")
    assert scores.null_count == 0


def test_null_model_inputs_without_a_contract_fail_the_run(fresh_project):
    project = fresh_project
    rewrite(project, "part-1.parquet", lambda t: set_values(t, "region", {0: None}))
    job = project.job("nulls_no_contract", contract=None)
    code, summary = project.run(job)
    assert code == 3, summary.get("error")
    assert "input: 1 of 6000 rows failed, the job has no contract to quarantine them" in summary["error"]
    assert "model_input_not_null(region)" in summary["error"]
    assert not (project.warehouse / "nulls_no_contract" / "_delta_log").exists()


def test_empty_file_and_partition_without_files(fresh_project):
    """An empty file scores nothing; a partition folder without files is not a partition (exit 2)."""
    project = fresh_project
    rewrite(project, "part-1.parquet", lambda t: t.slice(0, 0))
    (project.data / "ds=2026-11-28").mkdir()
    job = project.job("empty")
    code, summary = project.run(job, f"ds={DAY}")
    assert code == 0, summary.get("error")
    assert summary["rows_in"] == summary["rows_scored"] == ROWS_PER_DAY // 2
    proc = project.score("run", str(job), "--partitions", "ds=2026-11-28", env={"RAY_ADDRESS": "127.0.0.1:9"})
    assert proc.returncode == 2
    assert "partition ds=2026-11-28 not found under" in proc.stderr


def test_corrupt_parquet_file_is_named(fresh_project):
    project = fresh_project
    broken = project.data / f"ds={DAY}" / "part-1.parquet"
    broken.write_bytes(b"PAR1 definitely not parquet")
    proc = project.score("run", str(project.job("corrupt")), env={"RAY_ADDRESS": "127.0.0.1:9"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"input file {broken} is not readable Parquet" in proc.stderr


def test_mixed_schemas_in_a_partition_quarantine_the_drifted_file(fresh_project):
    """A column missing, or text where the other files hold numbers ("02134" is not 2134): the file fails whole,
    quarantined with the columns that cast."""
    project = fresh_project

    def drift(t: pa.Table) -> pa.Table:
        ages = [str(v) for v in t.column("age").to_pylist()]
        ages[0] = "forty"
        t = t.set_column(t.schema.get_field_index("age"), "age", pa.array(ages))
        return t.drop_columns(["plan_tier"])

    drifted = rewrite(project, "part-1.parquet", drift)
    code, summary = project.run(project.job("mixed", contract=QUARANTINE))
    assert code == 0, summary.get("error")
    half = ROWS_PER_DAY // 2
    assert (summary["rows_scored"], summary["rows_quarantined"]) == (half, half)
    quarantine = DeltaTable(str(project.warehouse / "mixed__quarantine")).to_pyarrow_table().sort_by("customer_id")
    assert set(reasons_by_id(quarantine).values()) == {"schema(age)=string (expected int64);schema(plan_tier)=missing"}
    assert quarantine.column("customer_id").to_pylist() == sorted(drifted.column("customer_id").to_pylist())
    ages = dict(zip(quarantine.column("customer_id").to_pylist(), quarantine.column("age").to_pylist()))
    original = dict(zip(drifted.column("customer_id").to_pylist(), drifted.column("age").to_pylist()))
    # "forty" does not cast, so the column is null; the reason names its type, the file holds its values
    assert set(ages) == set(original) and set(ages.values()) == {None}
    assert summary["contract"]["failures"]["schema(age)"]["rows"] == half
    assert set(quarantine.column("_source_file").to_pylist()) == {str(project.data / f"ds={DAY}" / "part-1.parquet")}


def test_int_where_float_is_expected_is_cast_and_extra_columns_are_ignored(fresh_project):
    """An int64 file among float64 ones is read as float64 (issue 20: it was quarantined whole as drift)."""
    project = fresh_project
    rewrite(project, "part-0.parquet", lambda t: t.append_column("note", pa.array(["x"] * t.num_rows)))
    ints = rewrite(
        project,
        "part-1.parquet",
        lambda t: t.set_column(
            t.schema.get_field_index("monthly_charges"),
            "monthly_charges",
            pa.array([int(v) for v in t.column("monthly_charges").to_pylist()], pa.int64()),
        ),
    )
    code, summary = project.run(project.job("dtypes"))  # on_failure: fail
    assert code == 0, summary.get("error")
    assert (summary["rows_scored"], summary["rows_quarantined"]) == (ROWS_PER_DAY, 0)  # extra column: scored
    scored = DeltaTable(summary["table_uri"]).to_pyarrow_table()
    got = dict(zip(scored.column("customer_id").to_pylist(), scored.column("churn_probability").to_pylist()))
    _, expected = onnx_scores(project.models / "model.onnx", ints)
    np.testing.assert_allclose([got[c] for c in ints.column("customer_id").to_pylist()], expected, rtol=1e-6, atol=1e-7)


def test_empty_partition_scores_nothing_and_replaces_nothing_else(fresh_project):
    project = fresh_project
    for name in ("part-0.parquet", "part-1.parquet"):
        rewrite(project, name, lambda t: t.slice(0, 0))
    job = project.job("empty_day")
    code, summary = project.run(job, "all")
    assert code == 0, summary.get("error")
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_quarantined"]) == (
        2 * ROWS_PER_DAY,
        2 * ROWS_PER_DAY,
        0,
    )
    code, summary = project.run(job, f"ds={DAY}")
    assert code == 0, summary.get("error")
    assert (summary["rows_in"], summary["rows_scored"], summary["table_version"]) == (0, 0, 1)
    assert DeltaTable(summary["table_uri"]).to_pyarrow_table().num_rows == 2 * ROWS_PER_DAY


def corrupt_a_data_page(path) -> None:
    """Overwrite the start of the first data page of a file; its footer stays readable (the plan reads it)."""
    start = pq.read_metadata(path).row_group(0).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


def test_a_corrupt_data_page_names_its_file_and_partition_in_one_line(fresh_project):
    """Guards (issue 20): the inline engine named no file; on Ray about 150 lines of Ray's traceback came first."""
    project = fresh_project
    path = project.data / f"ds={DAY}" / "part-1.parquet"
    corrupt_a_data_page(path)
    job = project.job("corrupt_page")
    for engine, inline_max_rows in (("inline", 1_000_000), ("ray", 0)):
        proc = project.score("run", str(job), "--set", f"engine.inline_max_rows={inline_max_rows}")
        assert proc.returncode == 1, proc.stderr[-3000:]
        lines = proc.stderr.splitlines()
        errors = [line for line in lines if line.startswith("score: error:")]
        assert len(errors) == 1 and "Traceback" not in proc.stderr, (engine, proc.stderr[-3000:])
        assert errors[0].startswith(f"score: error: input file {path} (partition ds={DAY}) cannot be read: "), engine
        assert "nothing was committed" in errors[0]
        assert len(lines) <= 6, (engine, proc.stderr)  # what it did, the error, where native output went
    assert not (project.warehouse / "corrupt_page" / "_delta_log").exists()
