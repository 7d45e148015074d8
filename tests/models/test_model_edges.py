"""Models and types at the edges (issue 21): no silent overflow into a model input, no scores from a model that
returns another number of rows than it is given, a fixed batch size padded rather than failing rows, and every
signature problem refused at plan time with the input or output named.

The models are tiny ONNX graphs and torch modules made here, fed from the demo's customer columns.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from onnx import TensorProto, helper

from tests.conftest import DAYS, ROWS_PER_DAY

DAY = DAYS[-1].isoformat()
QUARANTINE = {"suite": "data_contracts/customers.json", "on_failure": "quarantine"}
ONNX_TYPES = {
    "int8": TensorProto.INT8,
    "int16": TensorProto.INT16,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "uint8": TensorProto.UINT8,
    "float16": TensorProto.FLOAT16,
    "float": TensorProto.FLOAT,
}


def onnx_model(path, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(initializers))
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def cast_model(path, dtype: str, rows=None):
    """y = float(x): a model input of `dtype`, `rows` per call (None: any)."""
    return onnx_model(
        path,
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
        [helper.make_tensor_value_info("x", ONNX_TYPES[dtype], [rows, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, 1])],
    )


def job(project, name, model, column="referral_count", outputs=None, contract=None, **changes):
    return project.job(
        name,
        contract=contract,
        model={"uri": str(model), "runtime": "onnx", "inputs": {"x": column}, "outputs": outputs or {"y": "y"}},
        **changes,
    )


def set_row(project, column: str, value, type_=None, row: int = 7) -> int:
    """Put `value` in row `row` of the newest day's first file (as `type_`); returns the row's id."""
    path = project.data / f"ds={DAY}" / "part-0.parquet"
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[row] = value
    kind = type_ or table.schema.field(column).type
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, kind))
    pq.write_table(table, path)
    return table.column("customer_id")[row].as_py()


@pytest.mark.parametrize(
    ("dtype", "column", "value", "type_"),
    [
        ("int8", "referral_count", 200, None),
        ("int32", "referral_count", 2_147_483_653, None),
        ("uint8", "referral_count", -1, None),
        ("int64", "referral_count", 2**64 - 1, pa.uint64()),
        ("float16", "monthly_charges", 70_000.0, None),
    ],
)
def test_a_value_the_model_input_cannot_hold_fails_its_row(fresh_project, tmp_path, dtype, column, value, type_):
    """Guards (issue 21): the cast wrapped around (200 as int8 became -56) or overflowed (70000 as float16: inf)."""
    project = fresh_project
    set_row(project, column, value, type_)
    if type_ is not None:  # every file of the day in that type: the run reads the column as uint64
        path = project.data / f"ds={DAY}" / "part-1.parquet"
        table = pq.read_table(path)
        pq.write_table(
            table.set_column(table.schema.get_field_index(column), column, table.column(column).cast(type_)), path
        )
    code, summary = project.run(job(project, f"narrow_{dtype}", cast_model(tmp_path / "m.onnx", dtype), column))
    assert code == 3, summary.get("error")
    assert f"model_input_out_of_range({column})" in summary["error"]
    assert f"{value} does not fit {dtype}" in summary["error"]
    assert not (project.warehouse / f"narrow_{dtype}" / "_delta_log").exists()


def test_out_of_range_rows_are_quarantined_and_the_rest_scored_as_the_model_does(fresh_project, tmp_path):
    project = fresh_project
    bad = set_row(project, "referral_count", 200)
    code, summary = project.run(job(project, "narrow_q", cast_model(tmp_path / "m.onnx", "int8"), contract=QUARANTINE))
    assert code == 0, summary.get("error")
    assert (summary["rows_scored"], summary["rows_quarantined"]) == (ROWS_PER_DAY - 1, 1)
    quarantine = DeltaTable(str(project.warehouse / "narrow_q__quarantine")).to_pyarrow_table().to_pylist()
    assert [(r["customer_id"], r["referral_count"], r["_reasons"]) for r in quarantine] == [
        (
            bad,
            200,
            [{"expectation": "model_input_out_of_range", "column": "referral_count", "value": "200 does not fit int8"}],
        )
    ]
    scored = DeltaTable(summary["table_uri"]).to_pyarrow_table()
    source = pq.read_table(project.data / f"ds={DAY}")
    expected = dict(zip(source.column("customer_id").to_pylist(), source.column("referral_count").to_pylist()))
    assert {c: y for c, y in zip(scored.column("customer_id").to_pylist(), scored.column("y").to_pylist())} == {
        c: float(v) for c, v in expected.items() if c != bad
    }


def test_integers_a_float_input_rounds_are_a_plan_warning(fresh_project, tmp_path):
    project = fresh_project
    model = cast_model(tmp_path / "m.onnx", "float")
    proc, plan = project.score_json("plan", str(job(project, "small", model)))
    assert proc.returncode == 0 and plan["model"]["warnings"] == [], proc.stderr[-2000:]
    set_row(project, "referral_count", 2**24 + 1)
    proc, plan = project.score_json("plan", str(job(project, "rounded", model)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert plan["model"]["warnings"] == [
        "model input 'x' (float32) from column 'referral_count' (int64): integers beyond 2^24 in magnitude are "
        "rounded to the nearest float32 (16777217 is scored as 16777216), and the files hold values up to 16777217"
    ]


def reduction(path, declared):
    """y = mean of x over the batch: one row whatever the batch."""
    return onnx_model(
        path,
        [helper.make_node("ReduceMean", ["x"], ["y"], keepdims=1, axes=[0])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, declared)],
    )


def first_rows(path):
    """y = the batch's first three rows: passes the plan's probe of three rows, not a batch of thousands."""
    return onnx_model(
        path,
        [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [
            helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
            helper.make_tensor("ends", TensorProto.INT64, [1], [3]),
            helper.make_tensor("axes", TensorProto.INT64, [1], [0]),
        ],
    )


def test_a_model_returning_other_row_counts_is_refused_never_scored_row_by_row(fresh_project, tmp_path):
    """Guards (issue 21): a reduction was "scored" one row at a time, each row's score the model on that row."""
    project = fresh_project
    for declared in ([1, 1], ["m", 1]):
        code, summary = project.run(job(project, "mean", reduction(tmp_path / "mean.onnx", declared)))
        assert code == 2, summary.get("error")
        assert "model output 'y' is [1, 1]: it returns 1 row(s) for any number of input rows" in summary["error"]

    import torch

    class Mean(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(0, keepdim=True)

    torch.jit.script(Mean()).save(str(tmp_path / "mean.pt"))
    torch_job = project.job(
        "mean_torch",
        contract=None,
        model={"uri": str(tmp_path / "mean.pt"), "runtime": "torch", "inputs": {"x": ["age"]}, "outputs": {"y": "y"}},
    )
    code, summary = project.run(torch_job)
    assert code == 2 and "model output 'y' is [1, 1]" in summary["error"], summary.get("error")

    code, summary = project.run(job(project, "three", first_rows(tmp_path / "three.onnx")))
    assert code == 1, summary.get("error")
    assert "model output 'y' returned 3 row(s) for a batch of" in summary["error"]
    assert not (project.warehouse / "three" / "_delta_log").exists()


@pytest.mark.parametrize("rows", [1, 8])
def test_a_model_with_a_fixed_batch_size_scores_every_row(fresh_project, tmp_path, rows):
    """Guards (issue 21): with a batch fixed at 8, 100 rows failed as model errors (64 scored, the rest
    quarantined); a batch of 1 worked only by retrying every row alone."""
    project = fresh_project
    model = cast_model(tmp_path / "fixed.onnx", "float", rows=rows)
    code, summary = project.run(
        job(
            project,
            f"fixed_{rows}",
            model,
            contract=QUARANTINE,
            scoring__batch_size=100,
            scoring__on_error="quarantine",
        )
    )
    assert code == 0, summary.get("error")
    assert (summary["rows_scored"], summary["rows_quarantined"]) == (ROWS_PER_DAY, 0)
    scored = DeltaTable(summary["table_uri"]).to_pyarrow_table()
    source = pq.read_table(project.data / f"ds={DAY}")
    expected = dict(zip(source.column("customer_id").to_pylist(), source.column("referral_count").to_pylist()))
    assert dict(zip(scored.column("customer_id").to_pylist(), scored.column("y").to_pylist())) == {
        c: float(v) for c, v in expected.items()
    }


def test_signature_problems_are_refused_at_plan_time_naming_input_or_output(fresh_project, tmp_path):
    """Guards (issue 21): each passed the plan and failed at run time as "the model raised on N of N rows"."""
    project = fresh_project
    one_d = onnx_model(
        tmp_path / "one_d.onnx",
        [helper.make_node("Squeeze", ["x", "axes"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    code, summary = project.run(job(project, "one_d", one_d, outputs={"y": ["a", "b"]}))
    assert (
        code == 2
        and "model output 'y' is 1-D ([N]): one value per row; model.outputs maps it to 2 columns" in (summary["error"])
    )
    rank3 = onnx_model(
        tmp_path / "rank3.onnx",
        [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    code, summary = project.run(job(project, "rank3", rank3))
    assert (
        code == 2
        and "model input 'x' is [N, 2, 3]: input columns give one value per column per row" in (summary["error"])
    )
    both = onnx_model(
        tmp_path / "both.onnx",
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["x"], ["z"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in ("y", "z")],
    )
    code, summary = project.run(job(project, "same", both, outputs={"y": "score", "z": "score"}))
    assert code == 2 and "model.outputs: 'y' and 'z' both map to column 'score'" in summary["error"]

    import torch

    class Scalar(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum()

    torch.jit.script(Scalar()).save(str(tmp_path / "scalar.pt"))
    code, summary = project.run(
        project.job(
            "scalar",
            contract=None,
            model={
                "uri": str(tmp_path / "scalar.pt"),
                "runtime": "torch",
                "inputs": {"x": ["age"]},
                "outputs": {"y": "y"},
            },
        )
    )
    assert code == 2 and "model output 'y' is a scalar (0-d), not one value per row" in summary["error"]


def test_an_int16_input_is_understood(fresh_project, tmp_path):
    """Guards (issue 21): `tensor(int16)` was not understood."""
    project = fresh_project
    code, summary = project.run(job(project, "int16", cast_model(tmp_path / "m.onnx", "int16")))
    assert code == 0, summary.get("error")
    scored = DeltaTable(summary["table_uri"]).to_pyarrow_table()
    source = pq.read_table(project.data / f"ds={DAY}")
    assert sorted(scored.column("y").to_pylist()) == sorted(
        float(v) for v in source.column("referral_count").to_pylist()
    )


class TupleOut:
    """Torch modules returning a dict, nested tuples, or float64 weights."""

    @staticmethod
    def save(path, kind: str):
        import torch

        class AsDict(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
                return {"double": x * 2.0, "negative": -x}

        class Nested(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
                return x, (x * 2.0, x * 3.0)

        class Float64(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.w = torch.nn.Parameter(torch.ones(1, 1, dtype=torch.float64))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x @ self.w

        module = {"dict": AsDict, "nested": Nested, "float64": Float64}[kind]()
        torch.jit.script(module).save(str(path))
        return path


def torch_job(project, name, model, outputs, **model_changes):
    return project.job(
        name,
        contract=None,
        model={"uri": str(model), "runtime": "torch", "inputs": {"x": ["age"]}, "outputs": outputs, **model_changes},
    )


def test_torch_dict_and_nested_outputs_map_by_key_and_path(fresh_project, tmp_path):
    """Guards (issue 21): a dict or nested tuple crashed the plan ("'dict' object has no attribute 'dtype'")."""
    project = fresh_project
    source = pq.read_table(project.data / f"ds={DAY}")
    ages = dict(zip(source.column("customer_id").to_pylist(), source.column("age").to_pylist()))
    cases = [
        ("dict", {"negative": "neg", "double": "twice"}, {"neg": -1.0, "twice": 2.0}),
        ("nested", {"1.1": "thrice", "0": "same"}, {"thrice": 3.0, "same": 1.0}),
    ]
    for kind, outputs, factors in cases:
        model = TupleOut.save(tmp_path / f"{kind}.pt", kind)
        code, summary = project.run(torch_job(project, f"torch_{kind}", model, outputs))
        assert code == 0, summary.get("error")
        scored = DeltaTable(summary["table_uri"]).to_pyarrow_table().to_pylist()
        assert len(scored) == ROWS_PER_DAY
        for column, factor in factors.items():
            assert all(row[column] == pytest.approx(factor * ages[row["customer_id"]]) for row in scored)
    code, summary = project.run(torch_job(project, "torch_wrong", tmp_path / "dict.pt", {"logits": "y", "probs": "z"}))
    assert code == 2
    assert summary["error"] == (
        "the torch model returns a dict of tensors ['double', 'negative']; model.outputs names ['logits', 'probs']: "
        "name each output by its key or path"
    )


def test_a_float64_torchscript_model_fed_float32_names_the_dtypes(fresh_project, tmp_path):
    project = fresh_project
    model = TupleOut.save(tmp_path / "f64.pt", "float64")
    code, summary = project.run(torch_job(project, "f64", model, {"out": "y"}))
    assert code == 2
    assert "rejects a probe of inputs shaped from model.inputs (x float32[3, 1])" in summary["error"]
    assert "set them with model.input_dtypes" in summary["error"]
    code, summary = project.run(torch_job(project, "f64_ok", model, {"out": "y"}, input_dtypes={"x": "float64"}))
    assert code == 0, summary.get("error")


def test_tables_hold_types_every_reader_reads(fresh_project):
    """Guards (issue 21): a uint64 id >= 2^63 committed under an int64 schema, nanosecond times put the
    `timestampNanos` feature on the quarantine table, durations, times of day and zoned timestamps failed the
    quarantine's write, and an event time in ns in one partition and us in another quarantined a partition as
    drift."""
    project = fresh_project
    for day in DAYS:
        for path in sorted((project.data / f"ds={day.isoformat()}").glob("*.parquet")):
            table = pq.read_table(path)
            ids = pa.array([v + 2**63 for v in table.column("customer_id").to_pylist()], pa.uint64())
            table = table.set_column(0, "customer_id", ids)
            seconds = pa.array(np.arange(table.num_rows), pa.int64())
            table = table.append_column("wait", seconds.cast(pa.duration("s")))
            table = table.append_column("opens", seconds.cast(pa.int32()).cast(pa.time32("s")))
            table = table.append_column(
                "seen_at", table.column("updated_at").cast(pa.timestamp("us", "America/New_York"))
            )
            if day == DAYS[-1]:
                index = table.schema.get_field_index("updated_at")
                table = table.set_column(index, "updated_at", table.column("updated_at").cast(pa.timestamp("ns")))
            pq.write_table(table, path)
    bad = set_row(project, "age", 7)  # below the contract's 18: one quarantined row
    contract = json.loads((project.root / "data_contracts" / "customers.json").read_text())
    contract["expectations"] += [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": c}} for c in ("wait", "opens", "seen_at")
    ]
    (project.root / "data_contracts" / "wide.json").write_text(json.dumps(contract))
    name = "wide_types"
    spec = project.job(name, contract={"suite": "data_contracts/wide.json", "on_failure": "quarantine"})
    code, summary = project.run(spec, "all")
    assert code == 0, summary.get("error")
    assert (summary["rows_scored"], summary["rows_quarantined"]) == (3 * ROWS_PER_DAY - 1, 1)
    for table in (name, f"{name}__quarantine"):
        proc = project.score("query", f"SELECT count(*) AS n, min(customer_id) AS low FROM {table}", "--format", "json")
        assert proc.returncode == 0, proc.stderr[-2000:]
    output = DeltaTable(summary["table_uri"])
    assert output.schema().to_arrow().field("customer_id").type == pa.decimal128(20, 0)
    assert min(output.to_pyarrow_table().column("customer_id").to_pylist()) >= 2**63
    quarantine = DeltaTable(str(project.warehouse / f"{name}__quarantine"))
    assert "timestampNanos" not in (quarantine.protocol().reader_features or [])
    (row,) = quarantine.to_pyarrow_table().to_pylist()
    assert (int(row["customer_id"]), row["age"], row["opens"]) == (bad, 7, "00:00:07.000000")
    assert row["wait"] == 7_000_000  # microseconds
