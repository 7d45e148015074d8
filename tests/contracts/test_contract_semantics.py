"""A contract's verdict is a property of the data, never of how the engine cut it (issue 8).

Each test guards one hazard: verdicts that changed with `scoring.batch_size`, table-level facts judged on
a projected batch, arguments the fast path silently mis-read, `validate` and `run` disagreeing, and
models that handle missing values themselves being refused their nulls.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from jobs.tools import synthetic
from tests.conftest import DAYS, ROWS_PER_DAY

DAY = DAYS[-1].isoformat()


def poke(path, column: str, changes: dict[int, object]) -> None:
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    for i, value in changes.items():
        values[i] = value
    index = table.schema.get_field_index(column)
    pq.write_table(
        table.set_column(index, table.schema.field(column), pa.array(values, table.schema.field(column).type)), path
    )


def write_contract(project, name: str, expectations: list[dict]) -> str:
    path = project.root / "data_contracts" / f"{name}.json"
    path.write_text(json.dumps({"name": name, "expectations": expectations}))
    return f"data_contracts/{name}.json"


def test_verdicts_are_per_partition_whatever_the_batch_size(fresh_project):
    """Guards: `mostly` judged per batch failed a batch that held a few bad rows although the partition
    is within `mostly`; a duplicate id in two batches of one partition went uncaught; `validate` did not
    fail rows with null model inputs that `run` failed."""
    project = fresh_project
    first, second = (project.data / f"ds={DAY}" / f"part-{i}.parquet" for i in (0, 1))
    duplicate = pq.read_table(first).column("customer_id")[0].as_py()
    null_id = pq.read_table(second).column("customer_id")[100].as_py()
    poke(second, "customer_id", {pq.read_metadata(second).num_rows - 1: duplicate})
    poke(first, "age", {i: 7 for i in range(1, 6)})  # 5 of 6,000 rows: within mostly 0.999
    poke(second, "monthly_charges", {100: None})  # a model input: the row cannot be scored
    suite = write_contract(
        project,
        "semantics",
        [
            {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "customer_id"}},
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "age", "min_value": 18, "max_value": 120, "mostly": 0.999},
            },
        ],
    )
    expected = sorted([duplicate, duplicate, null_id])
    for batch_size in (500, 1700, 65536):
        job = project.job(
            f"per_partition_{batch_size}",
            contract={"suite": suite, "on_failure": "quarantine", "max_bad_rows": 10},
            scoring={"batch_size": batch_size, "actors": {"min": 1, "max": 2}},
        )
        code, summary = project.run(job)
        assert code == 0, summary["error"]
        assert (summary["rows_scored"], summary["rows_quarantined"]) == (ROWS_PER_DAY - 3, 3), batch_size
        quarantined = DeltaTable(str(project.warehouse / f"per_partition_{batch_size}__quarantine")).to_pyarrow_table()
        assert sorted(quarantined.column("customer_id").to_pylist()) == expected, batch_size
        assert summary["contract"]["failures"].keys() == {
            "expect_column_values_to_be_unique(customer_id)",
            "model_input_not_null(monthly_charges)",
        }

        code, report = project.validate(job)
        assert code == 3
        assert report["rows_checked"] == ROWS_PER_DAY and report["rows_failed"] == 3, batch_size


def test_table_level_expectations_are_judged_on_the_files(fresh_project):
    """Guards: the column set was judged on the columns the reader projected (plus the partition column)
    and the row count on each batch, so an exact column set or a partition's row count always failed."""
    project = fresh_project
    columns = pq.read_schema(project.data / f"ds={DAY}" / "part-0.parquet").names
    suite = write_contract(
        project,
        "files",
        [
            {"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": columns, "exact_match": True}},
            {
                "type": "expect_table_row_count_to_be_between",
                "kwargs": {"min_value": ROWS_PER_DAY, "max_value": ROWS_PER_DAY},
            },
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "customer_id"}},
        ],
    )
    job = project.job("files", contract=suite, scoring={"batch_size": 1000, "actors": {"min": 1, "max": 2}})
    code, summary = project.run(job)
    assert code == 0, summary["error"]
    assert summary["rows_scored"] == ROWS_PER_DAY

    suite = write_contract(
        project,
        "too_many",
        [{"type": "expect_table_row_count_to_be_between", "kwargs": {"max_value": ROWS_PER_DAY - 1}}],
    )
    code, report = project.validate(project.job("too_many", contract=suite))
    assert code == 3 and report["rows_failed"] == ROWS_PER_DAY


def test_arguments_the_fast_path_does_not_implement_go_to_gx():
    """Guards: an expectation with `row_condition` was evaluated by the vectorised path, which ignored
    the condition and failed rows GX would not."""
    from jobs.contracts.suite import Contract, ContractValidator

    table = synthetic.customers(200, DAYS[-1], seed=3)
    ages = table.column("age").to_pylist()
    ages[0], ages[1] = 7, 8
    tenure = table.column("tenure_months").to_pylist()
    tenure[0] = 0
    table = table.set_column(table.schema.get_field_index("age"), "age", pa.array(ages, pa.int64()))
    table = table.set_column(
        table.schema.get_field_index("tenure_months"),
        "tenure_months",
        pa.array(tenure, table.schema.field("tenure_months").type),
    )
    exp = {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": "age", "min_value": 18, "row_condition": "tenure_months>0", "condition_parser": "pandas"},
    }
    validator = ContractValidator(Contract("c.json", "c", {"name": "c", "expectations": [exp]}, "0" * 64))
    assert validator.fast == [False]
    result = validator.validate(table)
    assert np.flatnonzero(result.failed).tolist() == [1]  # row 0 has tenure 0: outside the condition


@pytest.mark.parametrize(
    "kwargs, column_type",
    [
        ({"column": "region", "value_set": [1, 2]}, "string"),
        ({"column": "region", "min_value": "2026-01-01T00:00:00", "max_value": 5}, "string"),
    ],
)
def test_arguments_that_cannot_be_evaluated_are_refused_at_plan_time(fresh_project, kwargs, column_type):
    """Guards: a value set of another type, or bounds that cannot be compared with the column, failed
    inside the actors mid-run instead of naming the expectation before anything started."""
    project = fresh_project
    kind = "expect_column_values_to_be_in_set" if "value_set" in kwargs else "expect_column_values_to_be_between"
    suite = write_contract(
        project,
        "bad_args",
        [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "customer_id"}},
            {"type": kind, "kwargs": kwargs},
        ],
    )
    code, summary = project.run(project.job("bad_args", contract=suite))
    assert code == 2
    assert f"expectations[1] '{kind}' on column 'region' ({column_type})" in summary["error"]
    assert summary["run_id"] is None


def test_date_bounds_on_a_date_column_are_evaluated():
    """Guards: ISO date bounds on a date column raised inside the actors."""
    from jobs.contracts import expectations

    table = pa.table({"d": pa.array([None, dt.date(2026, 11, 1), dt.date(2026, 11, 20)], pa.date32())})
    outcome = expectations.evaluate(
        table, {"type": "expect_column_values_to_be_between", "kwargs": {"column": "d", "max_value": "2026-11-15"}}
    )
    assert outcome.failed_rows.tolist() == [2]


def hist_gradient_boosting(path):
    """A HistGradientBoostingClassifier, which routes missing values itself, as ONNX."""
    import skl2onnx.common._container as container
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 2)).astype(np.float32) * [20, 30] + [30, 70]
    x[rng.random(3000) < 0.2, 1] = np.nan
    y = (np.nan_to_num(x[:, 1], nan=100.0) > 70).astype(int)
    model = HistGradientBoostingClassifier(max_iter=20).fit(x, y)

    add_node = container.ModelComponentContainer.add_node

    def ints(self, *args, **attrs):  # skl2onnx 1.20 mixes numpy bools into an int list for sklearn 1.9
        if "nodes_missing_value_tracks_true" in attrs:
            attrs["nodes_missing_value_tracks_true"] = [int(v) for v in attrs["nodes_missing_value_tracks_true"]]
        return add_node(self, *args, **attrs)

    container.ModelComponentContainer.add_node = ints
    try:
        onx = to_onnx(model, initial_types=[("X", FloatTensorType([None, 2]))], options={"zipmap": False})
    finally:
        container.ModelComponentContainer.add_node = add_node
    path.write_bytes(onx.SerializeToString())
    return path


def test_null_inputs_pass_feeds_nan_to_a_model_that_handles_it(fresh_project, tmp_path):
    """Guards: `model.null_inputs: pass` did not exist, so a gradient-boosted model that handles missing
    values natively had its rows with nulls quarantined or failed instead of scored."""
    project = fresh_project
    path = project.data / f"ds={DAY}" / "part-0.parquet"
    poke(path, "monthly_charges", {i: None for i in range(0, 3000, 7)})
    poke(path, "tenure_months", {5: None})
    missing = len(range(0, 3000, 7)) + 1
    model = hist_gradient_boosting(tmp_path / "hgb.onnx")
    suite = write_contract(
        project, "ids", [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "customer_id"}}]
    )
    job = project.job(
        "nulls_pass",
        contract={"suite": suite, "on_failure": "quarantine"},
        model={
            "uri": str(model),
            "null_inputs": "pass",
            "inputs": {"X": ["tenure_months", "monthly_charges"]},
            "outputs": {"probabilities": [None, "p"], "label": "label"},
        },
    )
    code, summary = project.run(job)
    assert code == 0, summary["error"]
    assert (summary["rows_scored"], summary["rows_quarantined"]) == (ROWS_PER_DAY, 0)

    source = pa.concat_tables(pq.read_table(p) for p in sorted((project.data / f"ds={DAY}").glob("*.parquet")))
    x = np.stack(
        [
            source.column(c).to_numpy(zero_copy_only=False).astype(np.float32)
            for c in ("tenure_months", "monthly_charges")
        ],
        axis=1,
    )
    assert np.isnan(x).any(axis=1).sum() == missing
    _, probabilities = ort.InferenceSession(str(model)).run(None, {"X": x})
    expected = dict(zip(source.column("customer_id").to_pylist(), probabilities[:, 1].tolist()))
    scored = DeltaTable(summary["table_uri"]).to_pyarrow_table()
    got = dict(zip(scored.column("customer_id").to_pylist(), scored.column("p").to_pylist()))
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-6, atol=1e-7)
    assert pc.sum(pc.is_null(scored.column("p"))).as_py() == 0

    code, summary = project.run(job, overrides=("model.null_inputs=reject", "output.table=nulls_reject"))
    assert code == 0, summary["error"]
    assert summary["rows_quarantined"] == missing
