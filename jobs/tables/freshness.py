"""Freshness: how old the newest data in a table is, against a limit such as `26h`.

Each run records per output partition the input watermark (the newest event time it scored, else the
partition's date) and when it was scored (`jobs.tables.lineage.OutputRecord`). A table is fresh while its newest
partition's watermark is younger than the limit; when stale, the message names that partition and by
how much it is over, in one line an Airflow sensor or an alert can show as is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from jobs.spec.durations import format_duration, parse_duration
from jobs.tables.lineage import OutputRecord, TableState, parse_time


@dataclass(frozen=True)
class Freshness:
    table: str
    version: int
    fresh: bool
    max_age: str
    partition: str | None
    watermark: str | None
    scored_at: str | None
    age_s: float | None
    checked_at: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def newest_partition(state: TableState) -> OutputRecord | None:
    """The output partition with the newest watermark (ties: the latest scored)."""
    records = [rec for rec, _ in state.outputs.values()]
    return max(records, key=lambda r: (parse_time(r.watermark or r.scored_at), r.scored_at), default=None)


def check(state: TableState, table: str, max_age: str, now: dt.datetime) -> Freshness:
    """Judge the newest output partition of `state` (ties: the latest scored) against `max_age`."""
    limit = parse_duration(max_age)
    newest = newest_partition(state)
    checked_at = now.isoformat(timespec="seconds")
    if newest is None:
        return Freshness(
            table,
            state.version,
            fresh=False,
            max_age=max_age,
            checked_at=checked_at,
            partition=None,
            watermark=None,
            scored_at=None,
            age_s=None,
            message=f"stale: {table} v{state.version} has no partition scored by a run",
        )
    mark = newest.watermark or newest.scored_at
    age = now - parse_time(mark)
    fresh = age <= limit
    what = (
        f"newest partition {newest.partition} has data up to {mark} (scored {newest.scored_at}), "
        f"{format_duration(age)} old"
    )
    if fresh:
        message = f"fresh: {table} v{state.version}: {what}, within max-age {max_age}"
    else:
        message = f"stale: {table} v{state.version}: {what}, {format_duration(age - limit)} over max-age {max_age}"
    return Freshness(
        table,
        state.version,
        fresh=fresh,
        max_age=max_age,
        checked_at=checked_at,
        partition=newest.partition,
        watermark=newest.watermark,
        scored_at=newest.scored_at,
        age_s=round(age.total_seconds(), 3),
        message=message,
    )
