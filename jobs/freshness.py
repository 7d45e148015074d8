"""Freshness: how old the newest data in a table is, against a limit such as `26h`.

Each run records per output partition the input watermark (the newest event time it scored, else the
partition's date) and when it was scored (`jobs.lineage.OutputRecord`). A table is fresh while its newest
partition's watermark is younger than the limit; when stale, the message names that partition and by
how much it is over, in one line an Airflow sensor or an alert can show as is.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from jobs.lineage import OutputRecord, TableState, parse_time

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> dt.timedelta:
    """`26h`, `90m`, `2d`, `1h30m`, `3600s` -> timedelta. Raises ValueError naming the expected form."""
    compact = str(text).replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration: use e.g. 26h, 90m, 2d or 1h30m")
    return dt.timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def format_duration(delta: dt.timedelta) -> str:
    """`30h 5m`, `4h`, `45m` below two days; `9d 3h` above (zero parts left out)."""
    seconds = int(abs(delta.total_seconds()))
    if seconds >= 2 * 86400:
        units = ((seconds // 86400, "d"), (seconds % 86400 // 3600, "h"))
    else:
        units = ((seconds // 3600, "h"), (seconds % 3600 // 60, "m"))
    text = " ".join(f"{n}{u}" for n, u in units if n) or "0m"
    return ("-" if delta.total_seconds() < 0 else "") + text


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
        from dataclasses import asdict

        return asdict(self)


def newest_partition(state: TableState) -> OutputRecord | None:
    """The output partition with the newest watermark (ties: the latest scored)."""
    records = [rec for rec, _ in state.outputs.values()]
    return max(records, key=lambda r: (parse_time(r.watermark or r.scored_at), r.scored_at), default=None)


def check(state: TableState, table: str, max_age: str, now: dt.datetime) -> Freshness:
    """Judge the newest output partition of `state` (ties: the latest scored) against `max_age`."""
    limit = parse_duration(max_age)
    newest = newest_partition(state)
    base = dict(table=table, version=state.version, max_age=max_age, checked_at=now.isoformat(timespec="seconds"))
    if newest is None:
        return Freshness(**base, fresh=False, partition=None, watermark=None, scored_at=None, age_s=None,
                         message=f"stale: {table} v{state.version} has no partition scored by a run")
    mark = newest.watermark or newest.scored_at
    age = now - parse_time(mark)
    fresh = age <= limit
    what = (f"newest partition {newest.partition} has data up to {mark} (scored {newest.scored_at}), "
            f"{format_duration(age)} old")
    if fresh:
        message = f"fresh: {table} v{state.version}: {what}, within max-age {max_age}"
    else:
        message = f"stale: {table} v{state.version}: {what}, {format_duration(age - limit)} over max-age {max_age}"
    return Freshness(**base, fresh=fresh, partition=newest.partition, watermark=newest.watermark,
                     scored_at=newest.scored_at, age_s=round(age.total_seconds(), 3), message=message)
