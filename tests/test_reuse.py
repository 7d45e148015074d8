"""`scoring.reuse`: a re-score with the same model sends only new or changed rows to the model and keeps every
other row's earlier score; the table equals a full re-score."""

from __future__ import annotations

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from tests.conftest import DAYS, ROWS_PER_DAY

DAY = f"ds={DAYS[-1]}"
CHANGED = ROWS_PER_DAY // 100  # 1% of the partition's rows


def change_rows(project) -> set[int]:
    """Raise the monthly charges of every 100th row of the partition's files; their ids."""
    changed = set()
    for path in sorted((project.data / DAY).glob("*.parquet")):
        table = pq.read_table(path)
        charges = table.column("monthly_charges").to_numpy().copy()
        rows = np.arange(0, table.num_rows, 100)
        charges[rows] += 25.0
        changed |= set(table.column("customer_id").take(pa.array(rows)).to_pylist())
        pq.write_table(
            table.set_column(table.schema.get_field_index("monthly_charges"), "monthly_charges", pa.array(charges)),
            path,
        )
    return changed


def scores(uri: str) -> pa.Table:
    return DeltaTable(uri).to_pyarrow_table().sort_by("customer_id")


@pytest.mark.parametrize("engine", ["1000000", "0"], ids=["inline", "ray"])
def test_only_changed_rows_reach_the_model_and_the_table_equals_a_full_rescore(fresh_project, engine):
    project = fresh_project
    job = project.job("reusing", scoring={"batch_size": 4096, "reuse": True})
    settings = (f"engine.inline_max_rows={engine}",)
    code, first = project.run(job, DAY, settings)
    assert code == 0, first["error"]
    assert first["devices"] == {"cpu": ROWS_PER_DAY} and first["rows_reused"] == 0
    before = scores(first["table_uri"])
    assert before.column("input_hash").null_count == 0

    changed = change_rows(project)
    assert len(changed) == CHANGED
    code, again = project.run(job, DAY, settings)
    assert code == 0, again["error"]
    assert again["devices"] == {"cpu": CHANGED, "reused": ROWS_PER_DAY - CHANGED}
    assert again["rows_reused"] == ROWS_PER_DAY - CHANGED and again["rows_scored"] == ROWS_PER_DAY
    after = scores(again["table_uri"])
    rescored = after.filter(pc.not_equal(after.column("scored_at"), before.column("scored_at")))
    assert set(rescored.column("customer_id").to_pylist()) == changed  # exactly the changed rows met the model
    assert set(after.column("run_id").to_pylist()) == {again["run_id"]}

    code, full = project.run(job, DAY, (*settings, "scoring.reuse=false", "output.table=full_rescore"))
    assert code == 0 and full["devices"] == {"cpu": ROWS_PER_DAY}
    whole = scores(full["table_uri"])
    for column in ("customer_id", "churn_label", "churn_probability"):
        assert after.column(column).equals(whole.column(column)), column


def test_another_model_reuses_nothing(fresh_project):
    """The same arithmetic under another sha256 (a changed doc string) is another model: every row is scored."""
    project = fresh_project
    job = project.job("reusing_other", scoring={"batch_size": 4096, "reuse": True})
    code, _ = project.run(job, DAY, ("engine.inline_max_rows=1000000",))
    assert code == 0
    model = onnx.load(project.models / "model.onnx")
    model.doc_string = "retrained"
    onnx.save(model, project.root / "retrained.onnx")
    code, summary = project.run(
        job, DAY, ("engine.inline_max_rows=1000000", f"model.uri={project.root / 'retrained.onnx'}")
    )
    assert code == 0, summary["error"]
    assert summary["devices"] == {"cpu": ROWS_PER_DAY} and summary["rows_reused"] == 0


def test_reuse_with_an_append_or_a_challenger_is_refused_naming_the_key(project):
    job = project.job("reuse_refused", scoring={"reuse": True})
    for override, why in (
        ("output.mode=append", "needs output.mode overwrite_partitions"),
        (f"model.challenger={project.models / 'model.onnx'}", "cannot go with model.challenger"),
    ):
        proc = project.score("run", str(job), "-p", DAY, "--set", override)
        assert proc.returncode == 2 and "scoring.reuse" in proc.stderr and why in proc.stderr, proc.stderr[-2000:]
