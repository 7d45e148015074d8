"""Models as people export them (issue 21): converted the way their libraries' docs say, scored by a job, and
compared with the model called directly on the same rows. What the probes of issue 21 showed to work stays
working: skl2onnx pipelines with string inputs (a classifier with string classes, a regressor), LightGBM through
onnxmltools, torch modules returning tuples and dicts, a fixed batch of 1 and 8, a model of several outputs.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from tests.conftest import DAYS, ROWS_PER_DAY
from tests.models.test_model_edges import cast_model, job

DAY = DAYS[-1].isoformat()
NUMERIC = ["age", "tenure_months", "monthly_charges", "support_tickets_90d"]
TEXT = ["region", "plan_tier"]


def day_rows(project) -> pa.Table:
    return pq.read_table(project.data / f"ds={DAY}")


def frame(table: pa.Table):
    x = table.select(NUMERIC + TEXT).to_pandas()
    x[NUMERIC] = x[NUMERIC].astype(np.float32)
    return x


def pipeline(estimator):
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    features = ColumnTransformer(
        [("numeric", StandardScaler(), NUMERIC), ("text", OneHotEncoder(handle_unknown="ignore"), TEXT)]
    )
    return Pipeline([("features", features), ("model", estimator)])


def to_onnx(model, path, converter=None):
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    types = [(c, FloatTensorType([None, 1])) for c in NUMERIC] + [(c, StringTensorType([None, 1])) for c in TEXT]
    if converter is None:
        from skl2onnx import to_onnx as convert

        options = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None
        onx = convert(model, initial_types=types, options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    else:
        onx = converter(model, initial_types=types)
    path.write_bytes(onx.SerializeToString())
    return path


def scored(summary) -> dict[int, dict]:
    return {row["customer_id"]: row for row in DeltaTable(summary["table_uri"]).to_pyarrow_table().to_pylist()}


def labels_of(table: pa.Table) -> np.ndarray:
    """A churn label with string classes, learnable from the features."""
    age = table.column("age").to_numpy()
    tickets = table.column("support_tickets_90d").to_numpy()
    return np.where(age / 10 + tickets > 8, "leave", "stay")


def onnx_job(project, name, path, outputs):
    return project.job(name, contract=None, model={"uri": str(path), "runtime": "onnx", "outputs": outputs})


def test_skl2onnx_classifier_with_string_classes_and_inputs(fresh_project, tmp_path):
    """Its label output is a string tensor: stored as a string column (issue 21: it was refused as a ZipMap)."""
    from sklearn.linear_model import LogisticRegression

    project = fresh_project
    table = day_rows(project)
    model = pipeline(LogisticRegression(max_iter=500)).fit(frame(table), labels_of(table))
    assert list(model.classes_) == ["leave", "stay"]
    path = to_onnx(model, tmp_path / "classifier.onnx")
    outputs = {"label": "churn_label", "probabilities": ["p_leave", None]}
    code, summary = project.run(onnx_job(project, "skl_classifier", path, outputs))
    assert code == 0, summary.get("error")
    rows = scored(summary)
    ids = table.column("customer_id").to_pylist()
    np.testing.assert_array_equal([rows[i]["churn_label"] for i in ids], model.predict(frame(table)))
    np.testing.assert_allclose(
        [rows[i]["p_leave"] for i in ids], model.predict_proba(frame(table))[:, 0], rtol=1e-5, atol=1e-6
    )
    assert DeltaTable(summary["table_uri"]).schema().to_arrow().field("churn_label").type == pa.string()


def test_skl2onnx_regressor_pipeline(fresh_project, tmp_path):
    from sklearn.ensemble import GradientBoostingRegressor

    project = fresh_project
    table = day_rows(project)
    target = table.column("total_charges").to_numpy()
    model = pipeline(GradientBoostingRegressor(n_estimators=20, max_depth=3)).fit(frame(table), target)
    path = to_onnx(model, tmp_path / "regressor.onnx")
    code, summary = project.run(onnx_job(project, "skl_regressor", path, {"variable": "predicted"}))
    assert code == 0, summary.get("error")
    rows = scored(summary)
    got = [rows[i]["predicted"] for i in table.column("customer_id").to_pylist()]
    np.testing.assert_allclose(got, model.predict(frame(table)), rtol=1e-5, atol=1e-3)


def test_lightgbm_through_onnxmltools(fresh_project, tmp_path):
    lightgbm = pytest.importorskip("lightgbm", reason="lightgbm is in the dev extra; not installed here")
    onnxmltools = pytest.importorskip("onnxmltools", reason="onnxmltools is in the dev extra; not installed here")
    from onnxmltools.convert.common.data_types import FloatTensorType

    project = fresh_project
    table = day_rows(project)
    x = np.stack([table.column(c).to_numpy().astype(np.float32) for c in NUMERIC], axis=1)
    classes = (labels_of(table) == "leave").astype(np.int64)
    model = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1).fit(x, classes)
    onx = onnxmltools.convert_lightgbm(
        model, initial_types=[("features", FloatTensorType([None, len(NUMERIC)]))], zipmap=False, target_opset=15
    )
    (tmp_path / "lgbm.onnx").write_bytes(onx.SerializeToString())
    label, probabilities = (o.name for o in onx.graph.output)
    spec = project.job(
        "lightgbm",
        contract=None,
        model={
            "uri": str(tmp_path / "lgbm.onnx"),
            "runtime": "onnx",
            "inputs": {"features": NUMERIC},
            "outputs": {label: "churn_label", probabilities: [None, "p_leave"]},
        },
    )
    code, summary = project.run(spec)
    assert code == 0, summary.get("error")
    rows = scored(summary)
    ids = table.column("customer_id").to_pylist()
    np.testing.assert_array_equal([rows[i]["churn_label"] for i in ids], model.predict(x))
    np.testing.assert_allclose([rows[i]["p_leave"] for i in ids], model.predict_proba(x)[:, 1], rtol=1e-5, atol=1e-6)


def test_torch_modules_returning_tuples_and_dicts(fresh_project, tmp_path):
    import torch

    torch.manual_seed(0)

    class Tuple(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(len(NUMERIC), 3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.layer(x / 100.0)
            return logits, torch.softmax(logits, dim=1)

    class Dict(Tuple):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
            logits = self.layer(x / 100.0)
            return {"logits": logits, "probs": torch.softmax(logits, dim=1)}

    project = fresh_project
    table = day_rows(project)
    x = torch.from_numpy(np.stack([table.column(c).to_numpy().astype(np.float32) for c in NUMERIC], axis=1))
    ids = table.column("customer_id").to_pylist()
    for kind, module, outputs in (
        ("tuple", Tuple(), {"logits": "logits", "probs": ["p0", "p1", "p2"]}),
        ("dict", Dict(), {"probs": ["p0", "p1", "p2"], "logits": "logits"}),
    ):
        path = tmp_path / f"{kind}.pt"
        torch.jit.script(module).save(str(path))
        spec = project.job(
            f"torch_{kind}",
            contract=None,
            model={"uri": str(path), "runtime": "torch", "inputs": {"x": NUMERIC}, "outputs": outputs},
        )
        code, summary = project.run(spec)
        assert code == 0, summary.get("error")
        with torch.inference_mode():
            logits = module(x)[0 if kind == "tuple" else "logits"].numpy()
        probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        rows = scored(summary)
        np.testing.assert_allclose([rows[i]["logits"] for i in ids], logits, rtol=1e-5, atol=1e-6)
        for k in range(3):
            np.testing.assert_allclose([rows[i][f"p{k}"] for i in ids], probs[:, k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows", [1, 8])
def test_a_fixed_batch_scores_like_the_model_called_per_batch(fresh_project, tmp_path, rows):
    project = fresh_project
    path = cast_model(tmp_path / "fixed.onnx", "float", rows=rows)
    code, summary = project.run(job(project, f"batch_{rows}", path, column="monthly_charges"))
    assert code == 0, summary.get("error")
    table = day_rows(project)
    session = ort.InferenceSession(str(path))
    values = table.column("monthly_charges").to_numpy().astype(np.float32)
    padded = np.concatenate([values, np.repeat(values[-1:], -len(values) % rows)])
    direct = np.concatenate(
        [session.run(None, {"x": padded[i : i + rows, None]})[0] for i in range(0, len(padded), rows)]
    )
    got = scored(summary)
    np.testing.assert_array_equal(
        [got[i]["y"] for i in table.column("customer_id").to_pylist()], direct[: len(values), 0]
    )


def test_a_model_of_several_outputs_and_types_is_bit_equal(fresh_project, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["rounded"], to=TensorProto.INT64),
            helper.make_node("Mul", ["x", "half"], ["scaled"]),
            helper.make_node("Concat", ["x", "scaled", "x"], ["triple"], axis=1),
        ],
        "several",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [
            helper.make_tensor_value_info("rounded", TensorProto.INT64, [None, 1]),
            helper.make_tensor_value_info("scaled", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("triple", TensorProto.FLOAT, [None, 3]),
        ],
        [helper.make_tensor("half", TensorProto.FLOAT, [1], [0.5])],
    )
    path = tmp_path / "several.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    project = fresh_project
    spec = job(
        project, "several", path, column="monthly_charges", outputs={"rounded": "r", "scaled": "s", "triple": "t"}
    )
    code, summary = project.run(spec)
    assert code == 0, summary.get("error")
    table = day_rows(project)
    x = table.column("monthly_charges").to_numpy().astype(np.float32)[:, None]
    rounded, scaled, triple = ort.InferenceSession(str(path)).run(None, {"x": x})
    got = scored(summary)
    ids = table.column("customer_id").to_pylist()
    assert len(got) == ROWS_PER_DAY
    assert [got[i]["r"] for i in ids] == rounded[:, 0].tolist()
    assert [got[i]["s"] for i in ids] == scaled[:, 0].tolist()
    assert [got[i]["t"] for i in ids] == triple.tolist()
