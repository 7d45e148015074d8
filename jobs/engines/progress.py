"""Progress of a Ray run, and the watchdog that fails a run that stopped making any.

Check tasks, scoring actors and write tasks add the rows they finish to one small named actor per run
(`Counter`, no CPU reserved); the driver's `Watchdog` reads it every few seconds (twice a second when it also
feeds a progress display). A run whose counts have
not moved for `engine.stall_timeout` (a model call or a storage read that never returns, a pool that
can never be placed) is interrupted and fails with a message naming the stage that stopped, instead of
hanging until a scheduler's own timeout kills it without a word.
"""

from __future__ import annotations

import _thread
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

from jobs.errors import RuntimeFailure

log = logging.getLogger(__name__)

STAGES = ("check", "score", "write", "quarantine")
POLL_S = 5.0
DISPLAY_POLL_S = 0.5


class Stalled(RuntimeFailure):
    """The run made no progress for `engine.stall_timeout`; nothing was committed."""


@ray.remote(num_cpus=0)
class Counter:
    def __init__(self) -> None:
        self.rows = dict.fromkeys((*STAGES, "tally"), 0)  # tally: the check stage's first pass (jobs.stages.checking)
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, rows: int, seconds: float) -> None:
        self.rows[stage] += rows
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def read(self) -> dict[str, int]:
        return self.rows

    def busy(self) -> dict[str, float]:
        return self.seconds


def count(progress: str, stage: str, rows: int, seconds: float = 0.0) -> None:
    """Add `rows` finished by `stage`, and the `seconds` its worker spent on them, to the counter named
    `progress` (fire and forget)."""
    counter = _counter(progress)
    if counter is not None:
        counter.add.remote(stage, rows, seconds)


def _counter(progress: str):
    """The counter actor named `progress` (this process remembers it), or None while there is none."""
    if progress not in _counters:
        try:
            _counters[progress] = ray.get_actor(_name(progress))
        except ValueError:
            return None
    return _counters[progress]


_counters: dict[str, Any] = {}


def _name(progress: str) -> str:
    return f"score-progress-{progress}"


class Watchdog:
    """`with Watchdog(progress, timeout_s, rows_in):` around one execution of the pipeline, whose tasks count
    into the counter named `progress`; timeout 0 turns the stall check off. `on_progress` is called with the
    counts (stage -> rows) at every read; an error in it never stops the watchdog."""

    def __init__(
        self,
        progress: str,
        timeout_s: float,
        rows_in: int,
        timeout_text: str,
        on_progress: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        self.progress, self.timeout_s, self.rows_in, self.timeout_text = progress, timeout_s, rows_in, timeout_text
        self.on_progress = on_progress
        self.stalled: str | None = None
        self.busy: dict[str, float] = {}  # seconds the workers spent in each stage, summed: read on exit
        self._stop = threading.Event()
        self._counter: Any = Counter.options(name=_name(progress)).remote()  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Watchdog:
        if self.timeout_s > 0 or self.on_progress:
            self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=POLL_S + 1)  # no progress drawn after the execution ended
        if exc_type is None:
            try:
                self.busy = ray.get(self._counter.busy.remote(), timeout=POLL_S)
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:  # only the breakdown lost
                log.warning("the stages' busy seconds could not be read: %s", exc)
        ray.kill(self._counter)
        if exc_type is KeyboardInterrupt and self.stalled:
            raise Stalled(self.stalled) from None

    def _watch(self) -> None:
        last: dict[str, int] | None = None
        moved = time.monotonic()
        every = DISPLAY_POLL_S if self.on_progress else POLL_S
        while not self._stop.wait(min(every, self.timeout_s / 4) if self.timeout_s > 0 else every):
            try:
                rows = ray.get(self._counter.read.remote(), timeout=POLL_S)
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
                rows = last  # no answer counts as no progress
            if rows and self.on_progress and not self._stop.is_set():
                try:
                    self.on_progress({stage: rows[stage] for stage in STAGES})
                except Exception as exc:  # a display that fails (a closed terminal) must not stop the stall check
                    log.debug("progress display failed: %s", exc)
            if rows != last:
                last, moved = rows, time.monotonic()
            elif self.timeout_s > 0 and time.monotonic() - moved >= self.timeout_s:
                self.stalled = self._message(rows or dict.fromkeys(STAGES, 0))
                _thread.interrupt_main()  # the driver waits on Ray in Python: it raises KeyboardInterrupt there
                return

    def _message(self, rows: dict[str, int]) -> str:
        checked, scored, written = rows["check"], rows["score"], rows["write"]
        if scored < checked:
            stage = "score (a model call that never returns, or a scoring actor that cannot be placed?)"
        elif checked < self.rows_in:
            stage = "check (a read of the input that never returns?)"
        else:
            stage = "write (a write to the table's storage that never returns?)"
        return (
            f"no progress for {self.timeout_text} (engine.stall_timeout): {checked:,} of {self.rows_in:,} rows "
            f"checked, {scored:,} scored, {written:,} written; the stuck stage is {stage}; nothing was committed"
        )
