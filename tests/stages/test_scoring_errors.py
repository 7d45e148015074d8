"""Rows the model raises on (issue 11): a failing batch is split down to the rows that really make the model
raise; `scoring.on_error: fail` names them and commits nothing, `quarantine` sets them aside with the
reason `model_error`; an out-of-memory error only halves the batch.

The model is a real TorchScript module that raises on a sentinel value (household_size 13, which the data
never holds and the contract allows) and, for the out-of-memory test, on batches of more than 64 rows.
The poison rows may land in any batch Ray cuts: only the inline engine's batches (one per partition here)
are relied on, for the message that lists several rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from jobs.columns import MODEL_ERROR
from jobs.errors import SpecError
from jobs.models.artifacts import InputBinding, ModelBinding
from jobs.spec.load import load_spec
from jobs.stages.scoring import RowFailure, build_feeds, isolate_failures
from tests.conftest import DAYS, DELETE, ROWS_PER_DAY, Project

FEATURES = ["age", "tenure_months", "household_size"]
POISON = 13
MESSAGE = "poison household_size 13"
OOM_ROWS = 64
CONTRACT = "data_contracts/customers.json"
QUARANTINE = {"suite": CONTRACT, "on_failure": "quarantine"}
INLINE = {"inline_max_rows": 1_000_000}
# Poison rows per day: (file number, row in that file). The newest day has one; the two others several,
# in both of their files; the oldest more than a failure message lists.
POISONED = {
    DAYS[-1]: [(0, 100)],
    DAYS[-2]: [(0, 5), (0, 2000), (1, 17)],
    DAYS[-3]: [(0, 0), (0, 1), (0, 999), (1, 3), (1, 500), (1, 2998), (1, 2999)],
}


def _scripted(path, oom: bool):
    import torch

    class Poisoned(torch.nn.Module):
        def forward(self, features: torch.Tensor) -> torch.Tensor:
            if bool((features[:, 2] == 13.0).any()):
                raise ValueError("poison household_size 13")
            return torch.tanh(features @ torch.tensor([0.031, -0.017, 0.29]) - 0.4)

    class Greedy(torch.nn.Module):
        def forward(self, features: torch.Tensor) -> torch.Tensor:
            if features.shape[0] > 64:
                raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.1 GiB total)")
            return torch.tanh(features @ torch.tensor([0.031, -0.017, 0.29]) - 0.4)

    torch.jit.script(Greedy() if oom else Poisoned()).save(str(path))
    return path


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory, models_dir):
    """A project whose input holds the POISONED rows; returns it, the model files and the poison ids."""
    project = Project(tmp_path_factory.mktemp("poisoned"), models_dir)
    ids = {}
    for day, rows in POISONED.items():
        for number in {n for n, _ in rows}:
            path = project.data / f"ds={day.isoformat()}" / f"part-{number}.parquet"
            table = pq.read_table(path)
            sizes = table.column("household_size").to_pylist()
            for n, row in rows:
                if n == number:
                    sizes[row] = POISON
                    ids[table.column("customer_id")[row].as_py()] = (day.isoformat(), path)
            index = table.schema.get_field_index("household_size")
            pq.write_table(table.set_column(index, "household_size", pa.array(sizes, pa.int64())), path)
    models = tmp_path_factory.mktemp("poison_models")
    return project, _scripted(models / "poisoned.pt", oom=False), _scripted(models / "greedy.pt", oom=True), ids


def _job(project, name, model, **changes):
    return project.job(
        name,
        model={"uri": str(model), "runtime": "torch", "inputs": {"features": FEATURES}, "outputs": {"out": "score"}},
        **changes,
    )


def _direct(model, table: pa.Table) -> np.ndarray:
    """The model called directly on the rows of `table`, one row at a time."""
    import torch

    module = torch.jit.load(str(model))
    features = np.stack([table.column(c).to_numpy().astype(np.float32) for c in FEATURES], axis=1)
    with torch.inference_mode():
        return np.array([module(torch.from_numpy(features[i : i + 1])).numpy()[0] for i in range(len(features))])


def _input(project, day=None) -> pa.Table:
    days = [day] if day else DAYS
    return pa.concat_tables(
        [pq.read_table(p) for d in days for p in sorted((project.data / f"ds={d.isoformat()}").glob("*.parquet"))]
    )


def _assert_scores_match_the_model(project, model, summary, expected_rows):
    output = DeltaTable(summary["table_uri"]).to_pyarrow_table().sort_by("customer_id")
    assert output.num_rows == expected_rows
    source = _input(project)
    source = source.filter(pc.is_in(source.column("customer_id"), output.column("customer_id"))).sort_by("customer_id")
    assert source.column("customer_id").equals(output.column("customer_id"))
    # float32 arithmetic over a row, in batches of other sizes: equal to a few ulps
    np.testing.assert_allclose(output.column("score").to_numpy(), _direct(model, source), rtol=1e-6, atol=1e-6)
    return output


# -- the splitting itself ---------------------------------------------------------------------------------


def _fake_scorer(poison: set[int], oom_above: int | None = None, calls: list | None = None):
    def score(table: pa.Table) -> dict[str, pa.Array]:
        values = table.column("x").to_pylist()
        if calls is not None:
            calls.append(len(values))
        if oom_above is not None and len(values) > oom_above:
            raise MemoryError("Unable to allocate 8.00 GiB for an array")
        bad = [v for v in values if v in poison]
        if bad:
            raise ValueError(f"poison {bad[0]}")
        return {"y": pa.array([v * 2.0 for v in values])}

    return score


def test_isolate_failures_singles_out_exactly_the_rows_that_raise():
    table = pa.table({"x": list(range(100))})
    isolated = isolate_failures(_fake_scorer({3, 4, 77}), table)
    assert isolated.complete and isolated.oom_at is None
    assert {p: (f.error, f.message) for p, f in isolated.failures.items()} == {
        3: ("ValueError", "poison 3"),
        4: ("ValueError", "poison 4"),
        77: ("ValueError", "poison 77"),
    }
    assert isolated.scores["y"].to_pylist() == [None if v in (3, 4, 77) else v * 2.0 for v in range(100)]

    calls = []
    clean = isolate_failures(_fake_scorer(set(), calls=calls), table, first=RowFailure("ValueError", "flaky"))
    assert not clean.failures and clean.scores["y"].to_pylist() == [v * 2.0 for v in range(100)]
    assert calls == [50, 50], "the span that already failed is not tried again; its halves are"


def test_out_of_memory_halves_the_batch_and_remembers_the_size_that_failed():
    table = pa.table({"x": list(range(100))})
    calls = []
    isolated = isolate_failures(_fake_scorer({42}, oom_above=10, calls=calls), table)
    assert isolated.oom_at == 12 and set(isolated.failures) == {42}
    assert isolated.scores["y"].to_pylist() == [None if v == 42 else v * 2.0 for v in range(100)]
    calls.clear()  # the next batch starts below the size that ran out of memory: no call over it
    again = isolate_failures(_fake_scorer(set(), oom_above=10, calls=calls), table, oom_at=isolated.oom_at)
    assert max(calls) <= 10 and sum(calls) == 100 and not again.failures

    stubborn = isolate_failures(_fake_scorer(set(), oom_above=0), pa.table({"x": [1, 2, 3]}))
    assert [f.oom for f in stubborn.failures.values()] == [True] * 3, "out of memory at one row: a row error"


def test_isolation_stops_at_a_model_that_fails_on_too_many_rows():
    isolated = isolate_failures(_fake_scorer(set(range(1000))), pa.table({"x": list(range(1000))}), limit=20)
    assert not isolated.complete and len(isolated.failures) == 21


def test_error_descriptions_see_through_torchscript_and_recognise_out_of_memory(poisoned):
    import torch

    _, model, greedy, _ = poisoned
    module = torch.jit.load(str(model))
    with pytest.raises(Exception) as raised:
        module(torch.tensor([[30.0, 5.0, 13.0]]))
    failure = RowFailure.of(raised.value)
    # the TorchScript message quotes the source (which mentions other errors): only its last error line counts
    assert (failure.error, failure.message, failure.oom) == ("ValueError", MESSAGE, False)
    with pytest.raises(Exception) as raised:
        torch.jit.load(str(greedy))(torch.zeros(65, 3))
    assert RowFailure.of(raised.value).oom
    assert RowFailure.of(torch.OutOfMemoryError("CUDA error")).oom
    ort = RuntimeError(
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running "
        "MatMul node. Status Message: BFCArena: Failed to allocate memory for requested buffer"
    )
    assert RowFailure.of(ort).oom and not RowFailure.of(ValueError("out of range")).oom
    assert RowFailure.of(ValueError("a\n  b")).message == "a b"


# -- the spec ---------------------------------------------------------------------------------------------


def test_on_error_defaults_to_fail_and_quarantine_needs_the_quarantine_policy(poisoned):
    project, model, _, _ = poisoned
    assert load_spec(_job(project, "spec_default", model), environ={}).spec.scoring.on_error == "fail"
    ok = _job(project, "spec_ok", model, contract=QUARANTINE, scoring={"on_error": "quarantine"})
    assert load_spec(ok, environ={}).spec.scoring.on_error == "quarantine"
    for name, contract in (("spec_fail", CONTRACT), ("spec_warn", {"suite": CONTRACT, "on_failure": "warn"})):
        job = _job(project, name, model, contract=contract, scoring={"on_error": "quarantine"})
        with pytest.raises(SpecError) as err:
            load_spec(job, environ={})
        assert err.value.key == "scoring.on_error" and err.value.file == str(job.resolve())
        assert "quarantine needs contract.on_failure: quarantine" in str(err.value)
    job = _job(project, "spec_none", model, contract=DELETE)
    with pytest.raises(SpecError) as err:
        load_spec(job, ["scoring.on_error=quarantine"], environ={})
    assert err.value.key == "scoring.on_error" and "the job has no contract" in str(err.value)
    with pytest.raises(SpecError) as err:
        load_spec(job, ["scoring.on_error=skip"], environ={})
    assert err.value.key == "scoring.on_error" and err.value.file == "--set" and "'skip'" in str(err.value)


# -- real runs --------------------------------------------------------------------------------------------


def test_on_error_fail_names_partition_file_and_row_and_commits_nothing(poisoned):
    project, model, _, ids = poisoned
    (poison_id,) = [i for i, (day, _) in ids.items() if day == DAYS[-1].isoformat()]
    job = _job(project, "errors_fail", model)
    code, summary = project.run(job)  # the newest partition, on Ray
    assert code == 1 and summary["status"] == "failed" and summary["engine"] == "ray"
    error = summary["error"]
    assert error.startswith("the scoring pipeline failed: ") and "ModelRowError: the model raised on 1 of " in error
    path = project.data / f"ds={DAYS[-1].isoformat()}" / "part-0.parquet"
    assert f"(partition ds={DAYS[-1].isoformat()}, file {path}: customer_id {poison_id});" in error
    assert f"first error ValueError: {MESSAGE}; nothing was committed" in error
    assert "\n" not in error
    assert not (project.warehouse / "errors_fail" / "_delta_log").exists()
    assert not list((project.warehouse / "errors_fail").rglob("*.parquet"))


def test_on_error_fail_lists_five_rows_and_the_count_inline(poisoned):
    project, model, _, ids = poisoned
    day = DAYS[-3].isoformat()
    # whole partitions (piece_bytes 0) and a batch as big as one: a single batch holds both files' poison rows
    job = _job(
        project,
        "errors_fail_inline",
        model,
        engine={**INLINE, "piece_bytes": 0},
        scoring={"batch_size": ROWS_PER_DAY},
    )
    code, summary = project.run(job, partitions=f"ds={day}")
    assert code == 1 and summary["engine"] == "inline"
    files = [project.data / f"ds={day}" / f"part-{n}.parquet" for n in (0, 1)]
    first = [i for i, (d, p) in ids.items() if d == day and p == files[0]]
    second = sorted(i for i, (d, p) in ids.items() if d == day and p == files[1])
    assert len(first) == 3 and len(second) == 4
    where = (
        f"(partition ds={day}, file {files[0]}: customer_id {', '.join(map(str, sorted(first)))}; "
        f"partition ds={day}, file {files[1]}: customer_id {second[0]}, {second[1]} and 2 more)"
    )
    assert f"ModelRowError: the model raised on 7 of {ROWS_PER_DAY} rows of a batch {where}" in summary["error"]
    assert not (project.warehouse / "errors_fail_inline" / "_delta_log").exists()


@pytest.mark.parametrize("engine", ["ray", "inline"])
def test_on_error_quarantine_sets_aside_exactly_the_poison_rows(poisoned, engine):
    project, model, _, ids = poisoned
    name = f"errors_quarantine_{engine}"
    job = _job(
        project,
        name,
        model,
        contract=QUARANTINE,
        scoring={"on_error": "quarantine", "batch_size": 1000},
        **({"engine": INLINE} if engine == "inline" else {}),
    )
    code, summary = project.run(job, partitions="all")
    assert code == 0, summary["error"]
    assert summary["engine"] == engine
    rows = 3 * ROWS_PER_DAY
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_quarantined"]) == (
        rows,
        rows - len(ids),
        len(ids),
    )
    assert summary["contract"]["rows_failed"] == len(ids)
    assert summary["contract"]["failures"] == {f"{MODEL_ERROR}(ValueError)": {"rows": len(ids), "examples": [MESSAGE]}}

    output = _assert_scores_match_the_model(project, model, summary, rows - len(ids))
    assert not set(output.column("customer_id").to_pylist()) & set(ids)
    quarantine = DeltaTable(str(project.warehouse / f"{name}__quarantine")).to_pyarrow_table()
    assert sorted(quarantine.column("customer_id").to_pylist()) == sorted(ids)
    assert quarantine.column("_reasons").to_pylist() == [
        [{"expectation": MODEL_ERROR, "column": "ValueError", "value": MESSAGE}]
    ] * len(ids)
    for cid, source, ds, size in zip(
        *(quarantine.column(c).to_pylist() for c in ("customer_id", "_source_file", "ds", "household_size"))
    ):
        assert (ds, source, size) == (ids[cid][0], str(ids[cid][1]), POISON)
    assert set(quarantine.column("run_id").to_pylist()) == {summary["run_id"]}


def test_out_of_memory_halves_batches_until_they_fit(poisoned):
    project, _, greedy, _ = poisoned
    job = _job(project, "errors_oom", greedy)  # batches of 4096 rows; the model takes at most 64
    code, summary = project.run(job, partitions="all")
    assert code == 0, summary["error"]
    assert summary["engine"] == "ray"
    assert (summary["rows_scored"], summary["rows_quarantined"]) == (3 * ROWS_PER_DAY, 0)
    _assert_scores_match_the_model(project, greedy, summary, 3 * ROWS_PER_DAY)


# -- non-finite outputs (issue 20) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def log_model(tmp_path_factory):
    """log(tenure_months - 1): NaN at tenure 0, -inf at tenure 1 (the synthetic data holds both, 1 in 72 each)."""
    import torch

    class Log(torch.nn.Module):
        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return torch.log(features[:, 1] - 1.0)

    path = tmp_path_factory.mktemp("log_model") / "log.pt"
    torch.jit.script(Log()).save(str(path))
    return path


def _nonfinite_ids(project) -> dict[int, str]:
    """The newest day's customers whose score is not finite: customer_id -> "nan" or "-inf"."""
    day = _input(project, DAYS[-1])
    tenure = dict(zip(day.column("customer_id").to_pylist(), day.column("tenure_months").to_pylist(), strict=True))
    return {cid: "nan" if months == 0 else "-inf" for cid, months in tenure.items() if months in (0, 1)}


def test_nonfinite_scores_fail_the_run_by_default(fresh_project, log_model):
    """Guards: NaN and inf scores were committed with exit 0 and nothing in the summary."""
    project = fresh_project
    day = DAYS[-1].isoformat()
    bad = _nonfinite_ids(project)
    assert bad, "the day must hold tenure 0 or 1"
    job = _job(  # one batch for the day (whole partitions, a batch as big as one): one count for all its rows
        project,
        "nonfinite_fail",
        log_model,
        engine={**INLINE, "piece_bytes": 0},
        scoring={"batch_size": ROWS_PER_DAY},
    )
    code, summary = project.run(job)
    assert code == 1 and summary["status"] == "failed"
    assert f"the model returned NaN or infinite values for {len(bad)} of {ROWS_PER_DAY} rows" in summary["error"]
    assert f"partition ds={day}" in summary["error"] and "model.allow_nonfinite: true" in summary["error"]
    assert not (project.warehouse / "nonfinite_fail" / "_delta_log").exists()


@pytest.mark.parametrize("engine", ["ray", "inline"])
def test_nonfinite_scores_are_quarantined_with_their_reason(fresh_project, log_model, engine):
    project = fresh_project
    bad = _nonfinite_ids(project)
    name = f"nonfinite_q_{engine}"
    job = _job(
        project,
        name,
        log_model,
        contract=QUARANTINE,
        scoring={"on_error": "quarantine"},
        **({"engine": INLINE} if engine == "inline" else {}),
    )
    code, summary = project.run(job)
    assert code == 0, summary["error"]
    assert (summary["rows_scored"], summary["rows_quarantined"]) == (ROWS_PER_DAY - len(bad), len(bad))
    output = DeltaTable(str(project.warehouse / name)).to_pyarrow_table()
    assert np.isfinite(output.column("score").to_numpy()).all()
    assert not set(output.column("customer_id").to_pylist()) & set(bad)
    quarantine = DeltaTable(str(project.warehouse / f"{name}__quarantine")).to_pyarrow_table()
    reasons = dict(zip(quarantine.column("customer_id").to_pylist(), quarantine.column("_reasons").to_pylist()))
    assert reasons == {
        cid: [{"expectation": "model_output_not_finite", "column": "score", "value": value}]
        for cid, value in bad.items()
    }


def test_allow_nonfinite_keeps_them_as_scores(fresh_project, log_model):
    project = fresh_project
    bad = _nonfinite_ids(project)
    job = _job(project, "nonfinite_kept", log_model, engine=INLINE)
    code, summary = project.run(job, overrides=("model.allow_nonfinite=true",))
    assert code == 0, summary["error"]
    assert summary["rows_scored"] == ROWS_PER_DAY
    output = DeltaTable(str(project.warehouse / "nonfinite_kept")).to_pyarrow_table()
    scores = dict(zip(output.column("customer_id").to_pylist(), output.column("score").to_pylist()))
    assert {cid: str(scores[cid]) for cid in bad} == bad


def test_string_inputs_reach_the_model_as_the_same_strings_whatever_their_cardinality_or_encoding():
    """Categorical string inputs go to ONNX Runtime through their dictionary (one Python string per value), free
    text through Arrow's own conversion; either way the model gets exactly the column's strings, nulls as ""."""
    rng = np.random.default_rng(7)
    rows = 5_000
    categories = rng.choice(["basic", "pro", "ünïcode", None], rows).tolist()
    free_text = [f"customer note {i}" if i % 7 else None for i in range(rows)]
    table = pa.table(
        {
            "plan": pa.chunked_array([pa.array(categories[:1_200]), pa.array(categories[1_200:])]),
            "note": pa.array(free_text, pa.large_string()),
            "region": pa.array(categories).dictionary_encode(),  # as Spark's dictionary pages read back
        }
    )
    binding = ModelBinding(
        inputs=(
            InputBinding("plan", ("plan",), "string", 1),
            InputBinding("both", ("note", "region"), "string", 2),
        ),
        outputs=(),
    )
    feeds = build_feeds(binding, table)
    expected = np.array(["" if v is None else v for v in categories], dtype=object)
    assert feeds["plan"].dtype == object and feeds["plan"].tolist() == expected.tolist()
    assert feeds["both"].shape == (rows, 2)
    assert feeds["both"][:, 0].tolist() == ["" if v is None else v for v in free_text]
    assert feeds["both"][:, 1].tolist() == expected.tolist()
    empty = build_feeds(binding, table.slice(0, 0))
    assert empty["plan"].shape == (0,) and empty["both"].shape == (0, 2)
