"""A challenger model scores the same batches as the champion, into `<table>__challenger`, and the run reports how
their scores agree, overall and per segment."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient
from onnx import TensorProto, helper

from jobs.models.artifacts import model_sha256
from tests.conftest import ROWS_PER_DAY

INLINE = "engine.inline_max_rows=1000000"
BUMP = 0.001  # the perturbed challenger's probabilities: the champion's plus tenure_months * BUMP
SEGMENTS = ["region"]


def perturbed(champion, out):
    """The champion with `tenure_months * BUMP` added to both class probabilities: the label is unchanged."""
    model = onnx.load(champion)
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["raw_probabilities" if o == "probabilities" else o for o in node.output]
    graph.initializer.append(helper.make_tensor("bump", TensorProto.FLOAT, [], [BUMP]))
    graph.node.extend(
        [
            helper.make_node("Mul", ["tenure_months", "bump"], ["shift"]),
            helper.make_node("Add", ["raw_probabilities", "shift"], ["probabilities"]),
        ]
    )
    onnx.checker.check_model(model)
    onnx.save(model, out)
    return out


def by_id(uri: str) -> pa.Table:
    return DeltaTable(uri).to_pyarrow_table().sort_by("customer_id")


def run_with(project, name, challenger, engine=INLINE):
    job = project.job(name, model__challenger=str(challenger), monitoring={"segments": SEGMENTS})
    return project.run(job, None, (engine,))


@pytest.mark.parametrize("engine", [INLINE, "engine.inline_max_rows=0"], ids=["inline", "ray"])
def test_an_identical_challenger_agrees_everywhere(fresh_project, engine):
    project = fresh_project
    twin = shutil.copy(project.models / "model.onnx", project.root / "twin.onnx")
    code, summary = run_with(project, "twins", twin, engine)
    assert summary["engine"] == ("inline" if engine == INLINE else "ray")
    assert code == 0, summary["error"]
    agreement = summary["challenger"]["agreement"]
    assert list(agreement)[0] == "(all)" and set(agreement) - {"(all)"} == {
        f"region={r}" for r in ("north", "south", "east", "west", "central", "islands")
    }
    for segment, columns in agreement.items():
        for column, figures in columns.items():
            assert figures["label_agreement"] == 1.0, (segment, column)
        assert columns["churn_probability"]["mean_abs_diff"] == 0.0
        assert columns["churn_probability"]["max_abs_diff"] == 0.0
        assert columns["churn_probability"]["correlation"] == pytest.approx(1.0)
    assert agreement["(all)"]["churn_label"]["rows"] == ROWS_PER_DAY
    champion, challenger = by_id(summary["table_uri"]), by_id(summary["table_uri"] + "__challenger")
    assert challenger.column("churn_probability").equals(champion.column("churn_probability"))
    assert challenger.column("customer_id").equals(champion.column("customer_id"))


def test_a_perturbed_challenger_shows_the_expected_differences_per_segment(fresh_project):
    project = fresh_project
    model = perturbed(project.models / "model.onnx", project.root / "bumped.onnx")
    code, summary = run_with(project, "bumped", model)
    assert code == 0, summary["error"]
    champion, challenger = by_id(summary["table_uri"]), by_id(summary["table_uri"] + "__challenger")
    inputs = pa.concat_tables(pq_read(project, summary["partitions"][0]))
    inputs = inputs.select(["customer_id", "tenure_months", "region"]).sort_by("customer_id")
    x = champion.column("churn_probability").to_numpy().astype(np.float64)
    y = challenger.column("churn_probability").to_numpy().astype(np.float64)
    # the challenger's table holds its own model's scores: the champion's plus the bump, in float32
    expected = (
        champion.column("churn_probability").to_numpy()
        + np.float32(BUMP) * inputs.column("tenure_months").to_numpy().astype(np.float32)
    ).astype(np.float64)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    regions = inputs.column("region").to_numpy(zero_copy_only=False)
    agreement = summary["challenger"]["agreement"]
    for segment, rows in [("(all)", np.ones(len(x), bool))] + [
        (f"region={r}", regions == r) for r in np.unique(regions)
    ]:
        figures = agreement[segment]["churn_probability"]
        difference = np.abs(x[rows] - y[rows])
        assert figures["rows"] == rows.sum()
        assert figures["mean_abs_diff"] == pytest.approx(difference.mean(), rel=1e-9)
        assert figures["max_abs_diff"] == difference.max()
        assert figures["correlation"] == pytest.approx(np.corrcoef(x[rows], y[rows])[0, 1], rel=1e-9)
        assert figures["label_agreement"] == pytest.approx(np.mean(x[rows] == y[rows]))
        assert agreement[segment]["churn_label"]["label_agreement"] == 1.0  # the bump leaves the label alone

    # the challenger's table: same keys, its own model in the lineage
    assert challenger.column("customer_id").equals(champion.column("customer_id"))
    assert set(challenger.column("run_id").to_pylist()) == {summary["run_id"]}
    lineage = json.loads(DeltaTable(summary["table_uri"] + "__challenger").history(1)[0]["score.lineage"])
    assert lineage["model"]["sha256"] == model_sha256(model, ()) == summary["challenger"]["model"]["sha256"]
    assert lineage["model"]["version"] == summary["challenger"]["model"]["version"]
    assert set(challenger.column("model_version").to_pylist()) == {lineage["model"]["version"]}
    assert lineage["run_id"] == summary["run_id"]
    assert summary["challenger"]["version"] == 0

    run = MlflowClient(project.tracking_uri).get_run(summary["run_id"])
    whole = agreement["(all)"]["churn_probability"]
    assert run.data.metrics["challenger/churn_probability/mean_abs_diff"] == pytest.approx(whole["mean_abs_diff"])
    assert run.data.tags["score.challenger_sha256"] == lineage["model"]["sha256"]

    proc = project.score("compare", "bumped", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["agreement"] == agreement
    text = project.score("compare", "bumped")
    assert text.returncode == 0 and "region=north" in text.stdout and "mean_abs_diff" in text.stdout


def pq_read(project, partition: str) -> list[pa.Table]:
    import pyarrow.parquet as pq

    return [pq.read_table(path) for path in sorted((project.data / partition).glob("*.parquet"))]


def test_a_challenger_without_the_champions_outputs_is_refused_before_anything_runs(fresh_project):
    project = fresh_project
    model = onnx.load(project.models / "model.onnx")
    kept = [o for o in model.graph.output if o.name != "label"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    onnx.save(model, project.root / "no_label.onnx")
    code, summary = run_with(project, "refused", project.root / "no_label.onnx")
    assert code == 2
    assert "model.challenger" in summary["error"] and "label" in summary["error"]
    assert not (project.warehouse / "refused").exists()
