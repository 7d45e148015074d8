"""Late data: `score run --wait-for-partitions` waits for a partition that has not landed, then exits 75 (retry-safe)
or scores it once it lands; without the flag a missing partition stays a usage error (exit 2)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from jobs.cli import job_commands
from jobs.cli.parser import build_parser
from jobs.errors import RetryableFailure, UsageError
from jobs.inputs import PartitionNotFound, await_partitions, select_input
from jobs.tools import synthetic
from tests.conftest import DAYS

LATE = DAYS[-1] + dt.timedelta(days=1)  # 2026-11-28: not in the project's data
LEAN = {"engine__inline_max_rows": 200_000}  # scored in this process: no Ray to start on a shared 2-core machine


def land(data, day: dt.date, rows: int) -> int:
    """Write one day's partition as a writer should: under a hidden name, then renamed into place at once."""
    staging = data / f".staging-{day}"
    written = synthetic.write_partitions(staging, [day], rows, seed=7)
    os.rename(staging / f"ds={day}", data / f"ds={day}")
    staging.rmdir()
    return written


def test_a_partition_that_never_lands_exits_75_naming_it_and_the_input(fresh_project):
    project = fresh_project
    job = project.job("late", **LEAN)
    started = time.monotonic()
    proc, summary = project.score_json("run", str(job), "-p", f"ds={LATE}", "--wait-for-partitions", "3s")
    assert proc.returncode == 75, proc.stderr[-3000:]
    assert time.monotonic() - started < 120
    message = f"partition ds={LATE} not found under {project.data}"
    assert summary["exit_code"] == 75 and summary["error"].startswith(message), summary["error"]
    assert "still missing after waiting 3s: nothing was read or written, retry once it lands" in summary["error"]
    assert summary["duration_s"] >= 3
    looks = [line for line in proc.stderr.splitlines() if "score: late: waiting for late data: " + message in line]
    assert len(looks) >= 2 and "next look in 1s, 3s left" in looks[0], proc.stderr[-3000:]
    assert f"score: error: {message}" in proc.stderr
    assert not (project.warehouse / "late").exists()


def test_a_partition_that_lands_while_waiting_is_scored_exactly(fresh_project, caplog):
    project = fresh_project
    job = project.job("late", **LEAN)
    landed: list[int] = []
    timer = threading.Timer(1.0, lambda: landed.append(land(project.data, LATE, 1_500)))
    timer.start()
    try:
        with caplog.at_level(logging.INFO, logger="jobs.commands.run"):
            code, summary = project.run(job, f"ds={LATE}", wait_for_partitions=dt.timedelta(seconds=90))
    finally:
        timer.join()
    assert code == 0, summary.get("error")
    assert landed == [1_500]
    assert summary["partitions"] == [f"ds={LATE}"] and summary["rows_in"] == 1_500
    assert summary["rows_scored"] + summary["rows_quarantined"] == 1_500
    table = DeltaTable(str(project.warehouse / "late")).to_pyarrow_table(columns=["ds"])
    assert {str(v) for v in table.column("ds").to_pylist()} == {LATE.isoformat()}
    assert table.num_rows == summary["rows_scored"]
    assert f"late: waiting for late data: partition ds={LATE} not found under {project.data}" in caplog.text
    assert f"late: ds={LATE} landed after" in caplog.text


def empty_files(folder) -> None:
    """Keep every Parquet file of `folder`, with no rows: written, but nothing in it yet."""
    for part in folder.iterdir():
        pq.write_table(pq.read_table(part).slice(0, 0), part)


def test_the_wait_looks_again_with_backoff_until_rows_land(tmp_path):
    """No clock: each injected sleep moves the partition one step: an empty folder (not a partition), files with
    no rows (not landed yet), then rows."""
    data = tmp_path / "customers"
    synthetic.write_partitions(data, DAYS, 10)
    lines: list[str] = []
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 1:
            (data / f"ds={LATE}").mkdir()
        elif len(pauses) == 2:
            synthetic.write_partitions(data, [LATE], 10)
            empty_files(data / f"ds={LATE}")
        else:
            synthetic.write_partitions(data, [LATE], 10)

    waited = await_partitions(str(data), ["ds"], f"ds={LATE}", 3600, lines.append, sleep=sleep)
    assert pauses == [1.0, 2.0, 4.0] and waited < 60
    assert all(f"partition ds={LATE} not found under {data}" in line for line in lines[:2]), lines
    assert "next look in 1s, 1h left" in lines[0] and "next look in 2s" in lines[1]
    assert f"ds={LATE} under {data}: its files hold no rows yet; next look in 4s" in lines[2]


def test_a_partition_still_empty_at_the_deadline_is_retry_safe(tmp_path):
    data = tmp_path / "customers"
    synthetic.write_partitions(data, [*DAYS, LATE], 10)
    empty_files(data / f"ds={LATE}")
    lines: list[str] = []
    with pytest.raises(RetryableFailure) as caught:
        await_partitions(str(data), ["ds"], f"unscored,ds={LATE}", 0.05, lines.append)
    assert caught.value.exit_code == 75
    assert str(caught.value).startswith(f"ds={LATE} under {data}: its files hold no rows yet; still missing after")
    assert lines and "its files hold no rows yet" in lines[0]


def test_every_missing_value_is_named_and_other_usage_errors_are_not_waited_for(tmp_path):
    data = tmp_path / "customers"
    synthetic.write_partitions(data, DAYS, 10)
    with pytest.raises(PartitionNotFound) as caught:
        select_input(str(data), ["ds"], f"ds={DAYS[0]},ds=2026-12-01,ds=2026-12-02")
    assert caught.value.missing == ("ds=2026-12-01", "ds=2026-12-02")
    assert str(caught.value).startswith(f"partitions ds=2026-12-01, ds=2026-12-02 not found under {data}; it holds")
    with pytest.raises(UsageError, match="partition selector 'region=x'") as refused:
        await_partitions(str(data), ["ds"], "region=x", 3600, print, sleep=pytest.fail)
    assert not isinstance(refused.value, PartitionNotFound)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--wait-for-partitions", "soon"], "--wait-for-partitions: 'soon' is not a duration: use e.g. 26h"),
        (["--wait-for-partitions", "1h", "--limit", "10", "--table", "t"], "--wait-for-partitions is for scheduled"),
    ],
)
def test_wait_flag_mistakes_are_usage_errors(flags, message):
    args = build_parser().parse_args(["run", "conf/jobs/churn_daily.yaml", *flags])
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        job_commands.run(args)
