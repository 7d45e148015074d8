"""Durations as the spec and the commands write them: `26h`, `90m`, `2d`, `1h30m`, `3600s`.

Hand-written rather than `pandas.Timedelta`, which reads a bare `26` as 26 nanoseconds, accepts negative
and ISO forms a spec should refuse, and deprecates the `d` unit in pandas 3.
"""

from __future__ import annotations

import datetime as dt
import re

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
