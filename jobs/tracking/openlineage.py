"""OpenLineage run events for every `score run`, so that Marquez, DataHub or Airflow's OpenLineage integration see
score jobs beside everything else: START once the plan is made, then COMPLETE, FAIL or ABORT (interrupted).

They go through the openlineage-python client and the transport its own configuration names (OPENLINEAGE_URL,
OPENLINEAGE_CONFIG or openlineage.yml, OPENLINEAGE__TRANSPORT__TYPE), or the job's `lineage.openlineage.transport`.
With neither, nothing is imported or sent: the client alone takes 0.4 s to import. With one, the client is imported
and the events are built and sent by one thread of their own, in order, so that neither the import nor a slow
receiver delays the run's first row; the run waits for its last event at most END_WAIT_S. A transport that fails
costs the run one warning, never its outcome. `jobs.tracking.openlineage_events` builds the events.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from jobs.errors import ScoreError

if TYPE_CHECKING:
    from jobs.spec.schema import OpenLineageSpec
    from jobs.tracking.openlineage_events import RunPlan

log = logging.getLogger(__name__)

END_WAIT_S = 10.0  # at most this long a run waits for its last event (the client retries an unreachable server)
THREAD = "openlineage"
START, COMPLETE, FAIL, ABORT = "START", "COMPLETE", "FAIL", "ABORT"


class Summary(Protocol):
    """A run's outcome (`jobs.commands.summary.RunSummary`): the `--json` document is what the events read."""

    def to_json(self) -> str: ...


class RunEvents:
    """One run's events: `start` when the plan is made, `end` once, when the run succeeded or failed. Before `start`,
    and without a configured transport, both do nothing. A failure to send is said once: by `say` (the CLI's console,
    which shows the run's own lines; thread-safe), else as a logged warning."""

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self._say = say
        self._job = ""
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any] | None, str | None] | None] | None = None
        self._sender: threading.Thread | None = None
        self._warned = False

    def start(self, plan: RunPlan) -> None:
        """Send START, from the sender thread (which imports the client first), when a transport is configured."""
        settings = plan.job.spec.lineage.openlineage
        if not configured(settings):
            return
        _quiet_retries()
        self._job = plan.job.spec.name
        self._queue = queue.SimpleQueue()
        self._queue.put((START, None, None))
        self._sender = threading.Thread(target=self._send, args=(plan, settings, self._queue), name=THREAD, daemon=True)
        self._sender.start()

    def end(self, summary: Summary, error: BaseException | None = None) -> None:
        """Send COMPLETE (no `error`), ABORT (an interrupt) or FAIL after START, and wait for it, END_WAIT_S at most."""
        if self._queue is None or self._sender is None:
            return
        state = COMPLETE if error is None else ABORT if isinstance(error, KeyboardInterrupt) else FAIL
        stack = None
        if error is not None and not isinstance(error, (ScoreError, KeyboardInterrupt)):  # a bug: its traceback
            stack = "".join(traceback.format_exception(error))
        self._queue.put((state, json.loads(summary.to_json()), stack))
        self._queue.put(None)
        self._queue = None
        self._sender.join(END_WAIT_S)
        if self._sender.is_alive():
            self._warn(f"the run's {state} event was not sent within {END_WAIT_S:g} s; the run goes on without it")

    def _send(self, plan: RunPlan, settings: OpenLineageSpec, events: queue.SimpleQueue) -> None:
        """The sender thread: build the client, then build and send each event as it is queued."""
        try:
            from jobs.tracking.openlineage_events import Emitter  # the client: 0.4 s, here only with a transport

            emitter = Emitter(plan, settings)
        except Exception as exc:  # noqa: BLE001 - a broken client or configuration never fails the run
            self._warn(f"no events sent: {type(exc).__name__}: {exc}")
            return
        while (item := events.get()) is not None:
            try:
                emitter.emit(*item)
            except Exception as exc:  # noqa: BLE001 - an unreachable or failing receiver never fails the run
                self._warn(f"{item[0]} event not sent: {type(exc).__name__}: {exc}")

    def _warn(self, message: str) -> None:
        """One warning per run, whatever else fails after it."""
        if self._warned:
            return
        self._warned = True
        if self._say is not None:
            self._say(f"{self._job}: warning: OpenLineage: {message}")
        else:
            log.warning("OpenLineage: %s", message)


def configured(settings: OpenLineageSpec) -> bool:
    """Whether events are to be sent: the job's own transport, else the places the client reads its own from, in its
    order; checked without importing the client, and without the console fallback it takes when it finds none."""
    if not settings.enabled or os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    if settings.transport or os.environ.get("OPENLINEAGE_URL") or os.environ.get("OPENLINEAGE__TRANSPORT__TYPE"):
        return True
    for path in (os.environ.get("OPENLINEAGE_CONFIG"), "openlineage.yml", "~/.openlineage/openlineage.yml"):
        if path and Path(path).expanduser().is_file():  # the first file found is the one the client reads
            return _names_transport(Path(path).expanduser())
    return False


def _names_transport(path: Path) -> bool:
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return True  # the client reports what is wrong with it
    transport = config.get("transport") if isinstance(config, dict) else None
    return isinstance(transport, dict) and bool(transport.get("type"))


class _NotFromSender(logging.Filter):
    """urllib3 logs a warning per retry of an unreachable receiver: the sender's one warning says it instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != THREAD


def _quiet_retries() -> None:
    retries = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _NotFromSender) for f in retries.filters):
        retries.addFilter(_NotFromSender())
