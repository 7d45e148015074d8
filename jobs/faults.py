"""Faults injected for real, at named points of a run, for the fault tests (`tests/test_faults.py`).

`SCORE_INJECT_FAULT=POINT:ACTION[:N]` makes the process that reaches POINT for the Nth time (default 1) do
ACTION to itself, once per `SCORE_FAULT_DIR` (a marker file taken with O_EXCL: a restarted actor, or another
actor of the pool, does not repeat it):

- `kill`: SIGKILL, as the kernel's OOM killer or a lost node would end the process;
- `stall`: sleep for an hour, as a hung model or storage call would; the marker says it began;
- `raise`: raise `InjectedFault` (every time, not once), as a model that cannot load would.

Points: `open_model` (a scoring actor, opening its model), `check_partition` (a check task, before it reads its
partition), `score_batch` (a scoring actor, before it scores a batch), `write_files` (a write task, after writing
its files, before reporting them), `commit` (the driver, with every file written, before the table commit) and
`committed` (the driver, its commit landed, before the run's last MLflow records) and `record` (the `score`
command's MLflow sidecar, before each record it makes: `jobs.tracking.recorder`). Unset, `inject` costs one
dictionary lookup. The variable is a `SCORE_*` one, so it reaches a cluster's workers like the storage settings do.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ENV = "SCORE_INJECT_FAULT"
DIR_ENV = "SCORE_FAULT_DIR"
ACTIONS = ("kill", "stall", "raise")


class InjectedFault(RuntimeError):
    """The `raise` action's error."""


_calls: dict[str, int] = {}


def inject(point: str) -> None:
    """Do the configured fault if this process is the one to reach `point` for the Nth time."""
    configured = os.environ.get(ENV)
    if not configured:
        return
    wanted, action, nth = (configured.split(":") + ["1"])[:3]
    if wanted != point or action not in ACTIONS:
        return
    _calls[point] = _calls.get(point, 0) + 1
    if action == "raise":
        raise InjectedFault(f"fault injected at {point} ({ENV}={configured})")
    if _calls[point] < int(nth) or not _claim(point):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(3600)


def _claim(point: str) -> bool:
    """Take the one marker of this fault: False when another process (or an earlier life of this actor) did."""
    folder = Path(os.environ.get(DIR_ENV) or ".")
    try:
        fd = os.open(folder / f"fault-{point}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True
