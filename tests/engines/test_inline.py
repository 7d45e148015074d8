"""Small local runs score in the driver process (`engine.inline_max_rows`): same rows, scores, quarantine and
lineage as the same run on Ray, only without starting Ray."""

from __future__ import annotations

import json
import threading

import numpy as np
import pyarrow.compute as pc
from deltalake import DeltaTable
from mlflow import MlflowClient

from jobs.engines.inline import Prefetched
from tests.conftest import DAYS, ROWS_PER_DAY
from tests.stages.test_quarantine import break_rows, reasons_by_id

INLINE = ("--set", "engine.inline_max_rows=1000000")


def test_an_inline_run_writes_what_the_same_run_on_ray_writes(fresh_project):
    project = fresh_project
    expected_reasons = break_rows(project)
    policy = {"suite": "data_contracts/customers.json", "on_failure": "quarantine", "max_bad_rows": 10}
    outcomes = {}
    for engine, extra in (("inline", INLINE), ("ray", ())):
        job = project.job(f"churn_{engine}", contract=policy)
        proc, summary = project.score_json("run", str(job), "--partitions", "all", *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert summary["engine"] == engine
        assert summary["rows_in"] == 3 * ROWS_PER_DAY
        assert summary["rows_scored"] == 3 * ROWS_PER_DAY - 3 and summary["rows_quarantined"] == 3
        outcomes[engine] = summary

    tables = {e: DeltaTable(s["table_uri"]).to_pyarrow_table().sort_by("customer_id") for e, s in outcomes.items()}
    inline, ray = tables["inline"], tables["ray"]
    assert inline.num_rows == ray.num_rows == 3 * ROWS_PER_DAY - 3
    assert inline.schema == ray.schema
    for column in ("customer_id", "ds", "churn_label", "model_version"):
        assert inline.column(column).equals(ray.column(column)), column
    np.testing.assert_array_equal(
        inline.column("churn_probability").to_numpy(), ray.column("churn_probability").to_numpy()
    )
    assert set(inline.column("run_id").to_pylist()) == {outcomes["inline"]["run_id"]}

    quarantined = DeltaTable(f"{outcomes['inline']['table_uri']}__quarantine").to_pyarrow_table()
    assert reasons_by_id(quarantined) == expected_reasons

    run = MlflowClient(project.tracking_uri).get_run(outcomes["inline"]["run_id"])
    assert run.data.params["engine"] == "inline"
    lineage = json.loads(DeltaTable(outcomes["inline"]["table_uri"]).history(1)[0]["score.lineage"])
    assert lineage["run_id"] == outcomes["inline"]["run_id"]
    assert lineage["code_sha256"] == run.data.tags["score.code_sha256"]
    assert lineage["engine"] == "inline" and lineage["devices"] == {"cpu": 3 * ROWS_PER_DAY}
    assert outcomes["ray"]["devices"] == {"cpu": 3 * ROWS_PER_DAY}  # every row reached an actor, failing ones too
    assert [o["rows_scored"] for o in lineage["outputs"]] == [ROWS_PER_DAY] * 2 + [ROWS_PER_DAY - 3]
    assert pc.count_distinct(inline.column("customer_id")).as_py() == inline.num_rows
    assert {d.isoformat() for d in DAYS} == set(inline.column("ds").to_pylist())


def test_the_engine_is_chosen_by_the_rows_of_the_run(fresh_project):
    project = fresh_project
    job = project.job("churn_small", input__partitions="all")
    proc, summary = project.score_json("run", str(job), "--set", f"engine.inline_max_rows={3 * ROWS_PER_DAY - 1}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["engine"] == "ray"  # one row over the limit
    proc, summary = project.score_json(
        "run", str(job), "--force", "--set", f"engine.inline_max_rows={3 * ROWS_PER_DAY}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["engine"] == "inline" and summary["table_version"] == 1


class _Block:
    """A stand-in for an Arrow table: only its size matters to Prefetched."""

    def __init__(self, n: int, nbytes: int) -> None:
        self.n, self.nbytes = n, nbytes


def test_prefetched_runs_ahead_by_its_byte_budget_and_no_further():
    """While the writer waits for the run's id, the scored rows run ahead of it up to `ahead_bytes`, beyond the
    `depth` items it keeps otherwise; what is queued when the producer asks for its next item never exceeds
    either bound, and every item arrives once, in order."""
    queued: list[tuple[int, int]] = []  # (items, bytes) queued whenever the producer makes its next item
    asked = threading.Semaphore(0)
    constructed = threading.Event()

    def blocks():
        constructed.wait()
        for n in range(12):
            if n:
                queued.append((len(ahead._items), ahead._bytes))
            asked.release()
            yield _Block(n, 10 * 2**20)

    ahead = Prefetched(blocks(), depth=2, ahead_bytes=35 * 2**20)
    constructed.set()
    for _ in range(4):  # the fourth block is made, and waits: three (30 MiB) are queued, a fourth would pass 35
        assert asked.acquire(timeout=30)
    got = [block.n for block in ahead]
    assert got == list(range(12))
    assert max(queued) <= (3, 30 * 2**20)
    assert queued[:3] == [(1, 10 * 2**20), (2, 20 * 2**20), (3, 30 * 2**20)]  # beyond depth 2, within the budget


def test_prefetched_close_stops_its_producer():
    made: list[int] = []
    stopped = threading.Event()

    def blocks():
        try:
            for n in range(1_000):
                made.append(n)
                yield _Block(n, 1)
        finally:
            stopped.set()

    ahead = Prefetched(blocks(), depth=2)
    ahead.close()
    assert stopped.wait(timeout=30)
    assert len(made) <= 4  # at most the queue's depth ahead, and the one that found it closed


def test_a_measured_crossover_belongs_to_one_project_s_job(fresh_project, tmp_path, monkeypatch):
    """`score bench` saves where Ray starts to pay per job; `score init` makes the same starter job (same name)
    in every project, and benching one moved the others' engine and printed the 2**62 sentinel as a limit."""
    from jobs.engines.inline import DEFAULT_INLINE_MAX_ROWS, inline_limit, inline_reason, save_crossover
    from jobs.spec.load import load_spec

    monkeypatch.setenv("SCORE_CACHE_DIR", str(tmp_path / "cache"))
    here = load_spec(fresh_project.job("twin", engine={"inline_max_rows": "measured"})).spec
    elsewhere = here.model_copy(update={"input": here.input.model_copy(update={"path": str(tmp_path / "other")})})
    save_crossover(here, 123_456, {"fixed_s": {}, "rows_per_s": {}})
    assert (inline_limit(here), inline_limit(elsewhere)) == (123_456, DEFAULT_INLINE_MAX_ROWS)
    assert inline_reason(here) == "at most engine.inline_max_rows 123,456 rows"
    save_crossover(here, None, {"fixed_s": {}, "rows_per_s": {}})  # Ray never paid
    assert inline_reason(here).endswith("found Ray no faster for this job on this machine")
    assert inline_limit(elsewhere) == DEFAULT_INLINE_MAX_ROWS
