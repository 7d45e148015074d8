"""Partition selectors resolve to exactly the files of the chosen partitions."""

from __future__ import annotations

import pytest

from jobs.errors import UsageError
from jobs.inputs import select_input
from tests.conftest import DAYS, ROWS_PER_DAY

D = [d.isoformat() for d in DAYS]


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("latest", [D[2]]),
        ("all", D),
        (f"ds={D[1]}", [D[1]]),
        (f"ds={D[0]},ds={D[2]}", [D[0], D[2]]),
        ([f"ds={D[0]}", f"ds={D[1]}"], [D[0], D[1]]),
        (f"ds={D[1]}..{D[2]}", [D[1], D[2]]),
        (f"ds=2000-01-01..{D[0]}", [D[0]]),
    ],
)
def test_selectors(project, selector, expected):
    selection = select_input(str(project.data), ["ds"], selector)
    assert selection.labels == [f"ds={d}" for d in expected]
    assert len(selection.files) == 2 * len(expected)
    assert selection.num_rows == ROWS_PER_DAY * len(expected)
    assert "customer_id" in selection.schema.names


def test_fingerprint_changes_when_a_file_changes(project, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(project.data, copy)
    before = select_input(str(copy), ["ds"], "all").fingerprint
    assert select_input(str(copy), ["ds"], "all").fingerprint == before
    (copy / f"ds={D[0]}" / "part-0.parquet").write_bytes((copy / f"ds={D[1]}" / "part-0.parquet").read_bytes())
    assert select_input(str(copy), ["ds"], "all").fingerprint != before


@pytest.mark.parametrize(
    "selector, message",
    [
        ("ds=1999-01-01", "partition ds=1999-01-01 not found"),
        ("region=north", "partition selector 'region=north'"),
        ("yesterday", "partition selector 'yesterday'"),
    ],
)
def test_bad_selectors(project, selector, message):
    with pytest.raises(UsageError, match=message):
        select_input(str(project.data), ["ds"], selector)


def _hourly(base, hours: list[str]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for hour in hours:
        (base / f"hour={hour}").mkdir(parents=True)
        pq.write_table(pa.table({"customer_id": [int(hour)]}), base / f"hour={hour}" / "part-0.parquet")
    return str(base)


@pytest.mark.parametrize(
    "hours, newest",
    [
        (["8", "9", "10"], "10"),
        (["8", "09", "10", "11"], "11"),
        (["9", "10", "100"], "100"),
    ],
)
def test_latest_compares_numbers_as_numbers(tmp_path, hours, newest):
    """Guards `latest` on numeric partition values: compared as text, hour=9 was newer than hour=10."""
    base = _hourly(tmp_path, hours)
    assert select_input(base, ["hour"], "latest").labels == [f"hour={newest}"]
    with pytest.raises(UsageError, match=f", hour={newest}$"):
        select_input(base, ["hour"], "hour=999")
    assert sorted(select_input(base, ["hour"], f"hour={hours[1]}..{newest}").labels) == sorted(
        f"hour={h}" for h in hours[1:]
    )


@pytest.mark.parametrize("column, kind", [("age", "int64"), ("region", "string")])
def test_event_time_column_must_be_a_timestamp(project, column, kind):
    """Guards freshness: a watermark from a string or int column is meaningless (or a crash after scoring);
    the plan refuses it, naming the column and its type, before Ray starts (exit 2)."""
    from jobs.plan.plan import make_plan
    from jobs.spec.load import load_spec

    loaded = load_spec(project.job("event_time", input__event_time_column=column), environ=project.env)
    with pytest.raises(UsageError, match=f"input.event_time_column: column '{column}' is {kind} in ") as err:
        make_plan(loaded)
    assert err.value.exit_code == 2 and "timestamp or date" in str(err.value)
