"""One run of a job at a time on this host (`score run --lock`): what cron needs when a run can outlast its
interval.

The lock is an exclusive `flock` on `.score/locks/<job>.lock` in the project. The kernel releases it when its
process ends, however it ends, so a crashed or killed run never leaves the job stuck; the file only keeps the
holder's pid and start time, for the message a refused run prints. (filelock, which we depend on, truncates
the file before it tries the lock, which would erase the holder's details.)
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs.errors import RetryableFailure


@contextmanager
def job_lock(root: Path, job: str) -> Iterator[Path]:
    """Hold the job's lock for the block, or raise RetryableFailure (exit 75) naming the run that holds it."""
    path = root / ".score" / "locks" / f"{job}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            raise RetryableFailure(
                f"job {job} is already running here ({holder}; lock {path}); this run did not start: "
                "nothing was read or written"
            ) from None
        os.ftruncate(handle, 0)
        os.write(
            handle,
            json.dumps({"pid": os.getpid(), "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}).encode(),
        )
        yield path
    finally:
        os.close(handle)  # closing releases the lock


def _holder(handle: int) -> str:
    try:
        about = json.loads(os.pread(handle, 4096, 0) or b"{}")
        return f"pid {about['pid']}, started {about['started']}"
    except (ValueError, KeyError):
        return "its pid not yet written"
