"""A run's MLflow name tells table, partitions and role apart (`jobs.tracking.names`): the daily run of a day, a
backfill, an ad-hoc sample, a dev run and a run with a challenger."""

from __future__ import annotations

import pyarrow as pa
import pytest

from jobs.inputs import InputFile, InputSelection
from jobs.spec.load import load_spec
from jobs.tracking.names import run_name, run_roles


def _selection(*partitions: tuple[tuple[str, str], ...], rows: int = 1_000) -> InputSelection:
    """The partitions, each with one file of `rows` rows (no file on disk: names never read them)."""
    files = tuple(InputFile(f"part-{n}.parquet", 1, 0, p, rows) for n, p in enumerate(partitions))
    return InputSelection("data/customers", tuple(c for c, _ in partitions[0]), tuple(partitions), files, pa.schema([]))


DAY = (("ds", "2026-12-05"),)
DAYS = [(("ds", f"2026-12-0{d}"),) for d in (3, 4, 5)]


@pytest.fixture(scope="module")
def job(project):
    return project.job("churn_names", output__table="churn_scores")


def test_a_plain_run_is_its_table_and_partition(job):
    loaded = load_spec(job)
    assert run_name(loaded, _selection(DAY)) == "churn_scores ds=2026-12-05"
    assert run_roles(loaded, _selection(DAY)) == []


def test_a_run_over_several_days_is_a_backfill_named_by_its_range(job):
    assert run_name(load_spec(job), _selection(*DAYS)) == "churn_scores ds=2026-12-03..2026-12-05 [backfill]"


def test_several_partitions_of_one_day_are_counted_not_a_backfill(job):
    regions = [(("ds", "2026-12-05"), ("region", r)) for r in ("North East", "South")]
    assert run_name(load_spec(job), _selection(*regions)) == "churn_scores ds=2026-12-05 (2 partitions)"


def test_a_sample_is_ad_hoc_with_its_rows_and_a_table_set_by_an_override_is_dev(job, project):
    sample = project.root / ".score" / "samples" / "churn_try"
    sample.mkdir(parents=True, exist_ok=True)  # what `score run --limit` writes the sample into
    loaded = load_spec(job, [f"input.path={sample}", "input.partitions=all", "output.table=churn_try"])
    assert run_name(loaded, _selection(*DAYS, rows=2_000)) == "churn_try ds=2026-12-03..2026-12-05 [ad-hoc, 6,000 rows]"
    assert run_roles(loaded, _selection(*DAYS)) == ["ad-hoc"]
    dev = load_spec(job, ["output.table=churn_scores_dev"])
    assert run_name(dev, _selection(DAY)) == "churn_scores_dev ds=2026-12-05 [dev]"


def test_roles_combine(job, models_dir):
    loaded = load_spec(job, [f"model.challenger={models_dir / 'model.onnx'}"])
    assert run_name(loaded, _selection(*DAYS)) == "churn_scores ds=2026-12-03..2026-12-05 [backfill, challenger]"
    assert run_roles(loaded, _selection(*DAYS)) == ["backfill", "challenger"]
