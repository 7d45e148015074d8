"""Who makes a run's MLflow records: this process, or a sidecar process that the `score` command starts first.

Importing MLflow and connecting to its store take about 1.9 s of CPU (MLflow's `__init__` imports its GenAI
package, FastAPI and polars; a database store sqlalchemy and alembic), mostly Python holding the GIL. A run
connects while its stages already check and score (`connect_soon`), but in a thread of the run's own process
that import slowed the stages' Python by as much (the demo's check stage: 2.7 s busy alone, 5.1 s beside the
import). So the `score` command starts a sidecar first thing (`start_sidecar`): a process that imports MLflow
while the run imports its own libraries and plans, connects when the run asks, then opens the MLflow run and
makes every record, in the order the run asks for them, each call answered before the next.

A run called in-process (tests, notebooks, `run_job`) without a sidecar records here, as before; the sidecar
would cost it a process and an import it has usually paid already. Both make the same calls
(`jobs.tracking.records`); a failure in the sidecar is raised in the run as it would have been here (its
exception, or a RuntimeFailure naming the sidecar when it died), and its log records are logged again here.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NoReturn

from jobs.errors import RuntimeFailure
from jobs.faults import inject

if TYPE_CHECKING:  # the CLI imports this module before anything heavy, to start the sidecar at once
    from jobs.spec.schema import TrackingSpec
    from jobs.tracking.orphans import Reaped

_sidecar: SidecarRecorder | None = None  # the one `start_sidecar` started, until a run takes it


class Recorder:
    """A run's records, made in this process: MLflow is imported and connected in a thread of its own."""

    def __init__(self) -> None:
        self._connected: Future[list[Reaped]] | None = None
        # When the run began (`recorder`), in epoch milliseconds: its MLflow run's start time. MLflow opens the run
        # seconds later (its import, the plan), and a run timed from there showed 1.0 s for a 6.2 s `score run`.
        self.began_ms = int(time.time() * 1000)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect_soon(self, tracking: TrackingSpec) -> None:
        """Start connecting to the store; `connected` waits for it."""
        connecting = ThreadPoolExecutor(1, thread_name_prefix="mlflow-connect")
        self._connected = connecting.submit(_connect, tracking)
        connecting.shutdown(wait=False)

    def connected(self) -> list[Reaped]:
        """Wait for the connection: the earlier runs whose driver was killed, now marked failed and their files
        deleted (`jobs.tracking.orphans`), for the run to report."""
        assert self._connected is not None, "connect_soon first"
        return self._connected.result()

    @contextmanager
    def run(
        self, name: str, read_versions: dict[str, int | None], driver_pid: int, began_ms: int | None = None
    ) -> Iterator[tuple[str, str]]:
        """The run's MLflow run (`records.mlflow_run`), started at `began_ms` (default: when this recorder was
        taken for the run); its run id and experiment id."""
        from jobs.tracking import records  # imported by `_connect`

        with records.mlflow_run(name, read_versions, driver_pid, began_ms or self.began_ms) as ids:
            yield ids

    def record(self, what: str, *args: Any) -> None:
        """`records.record_<what>(*args)`, in the open run."""
        from jobs.tracking import records

        getattr(records, f"record_{what}")(*args)

    def record_soon(self, what: str, *args: Any) -> None:
        """`record`, without waiting for it where the records are made in another process (its failure is raised
        by the next call): for records that take long to make (a drawn chart) and that nothing waits on."""
        self.record(what, *args)

    def close(self) -> None:
        """Nothing to stop here."""


def _connect(tracking: TrackingSpec) -> list[Reaped]:
    from jobs.tracking import records  # noqa: F401  # MLflow: 1.1 s
    from jobs.tracking.connect import connect
    from jobs.tracking.orphans import reap

    connect(tracking)
    return reap(tracking)


class SidecarRecorder(Recorder):
    """A run's records, made by the sidecar process; every call but `connect_soon` waits for its answer."""

    def __init__(self) -> None:
        super().__init__()
        ours, theirs = socket.socketpair()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "jobs.tracking.recorder", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # stdout is the run's `--json`; MLflow prints "View run ..." there
        )
        theirs.close()
        self._connection = Connection(ours.detach())
        self._waiting = 0  # calls sent whose answer is not read yet
        self._lost: RuntimeFailure | None = (
            None  # raised once, when the sidecar stopped answering; then calls are no-ops
        )
        self._used = False  # once asked to connect, the sidecar is let finish what it does, never killed
        self._closed = False
        atexit.register(self.close)

    def connect_soon(self, tracking: TrackingSpec) -> None:
        self._used = True
        self._send("connect", tracking)

    def connected(self) -> list[Reaped]:
        return self._answer()

    @contextmanager
    def run(
        self, name: str, read_versions: dict[str, int | None], driver_pid: int, began_ms: int | None = None
    ) -> Iterator[tuple[str, str]]:
        ids = self._call("open", name, read_versions, driver_pid, began_ms or self.began_ms)
        try:
            yield ids
        except BaseException:
            self._call("end", True)
            raise
        self._call("end", False)

    def record(self, what: str, *args: Any) -> None:
        self._call("record", what, *args)

    def record_soon(self, what: str, *args: Any) -> None:
        self._send("record", what, *args)

    def close(self) -> None:
        """Let the sidecar exit and wait for it; one that was only importing (the run found nothing to score) is
        stopped at once. It exits by itself too when this process dies."""
        if self._closed:
            return
        self._closed = True
        if not self._used:
            self._process.kill()
        self._connection.close()
        try:
            self._process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _call(self, name: str, *args: Any) -> Any:
        self._send(name, *args)
        return self._answer()

    def _send(self, name: str, *args: Any) -> None:
        if self._lost is not None:  # the run is failing for it already: its clean-up records nothing more
            return
        try:
            self._connection.send((name, args))
        except OSError as exc:
            raise self._died(exc) from None
        self._waiting += 1

    def _answer(self) -> Any:
        """The answer to the last call, after those before it (whose failures are raised first); the sidecar's
        log records are logged here as they come."""
        value = None
        while self._waiting:
            try:
                ok, value, logged = self._connection.recv()
            except (EOFError, OSError) as exc:
                raise self._died(exc) from None
            self._waiting -= 1
            for record in logged:
                logger = logging.getLogger(record.name)
                if logger.isEnabledFor(record.levelno):
                    logger.handle(record)
            if not ok:
                raise value
        return value

    def _died(self, exc: BaseException) -> RuntimeFailure:
        self._waiting = 0
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self._lost = RuntimeFailure(
            f"the MLflow sidecar process (pid {self._process.pid}) stopped answering ({type(exc).__name__}"
            f"{'' if code is None else f', exit code {code}'}): the run's MLflow records are incomplete; "
            "run again with -v to see its error output"
        )
        return self._lost


def start_sidecar() -> None:
    """Start the sidecar now, for the next run in this process to take (`recorder`). The `score run` command
    calls this before it imports the run's libraries, so that MLflow loads on the other core meanwhile."""
    global _sidecar
    if _sidecar is None:
        _sidecar = SidecarRecorder()


def recorder() -> Recorder:
    """The recorder of the run that starts now: the sidecar `start_sidecar` started, or this process. Close it
    when the run ends (it is a context manager)."""
    global _sidecar
    taken, _sidecar = _sidecar, None
    if taken is None:
        return Recorder()
    taken.began_ms = int(time.time() * 1000)  # the run begins now, not when the command started the sidecar
    return taken


# -- the sidecar process ------------------------------------------------------------------------------------


class _Collected(logging.Handler):
    """The sidecar's log records, sent back with each answer and logged again by the run."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args, record.exc_info, record.exc_text = record.getMessage(), None, None, None
        self.records.append(record)


def _serve(connection: Connection) -> NoReturn:
    """Answer the run's calls, in order, until it closes the connection; then exit the process."""
    collected = _Collected()
    logging.getLogger().addHandler(collected)
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    here = Recorder()
    run = ExitStack()
    from jobs.tracking import records  # noqa: F401  # MLflow, while the run imports its own libraries and plans

    while True:
        try:
            name, args = connection.recv()
        except (EOFError, OSError):
            break
        try:
            value: Any = None
            if name == "connect":
                value = _connect(*args)
            elif name == "open":
                value = run.enter_context(here.run(*args))
            elif name == "end":  # MLflow ends the run FAILED when its block exits with an exception
                failure = RuntimeFailure("the run failed") if args[0] else None
                run.__exit__(type(failure) if failure else None, failure, None)
                run = ExitStack()
            else:
                inject("record")
                here.record(*args)
            answer = (True, value, collected.records)
        except Exception as exc:  # raised in the run, as if it had been raised there
            sent = exc if _picklable(exc) else RuntimeFailure(f"{type(exc).__name__}: {exc}")
            answer = (False, sent, collected.records)
        collected.records = []
        try:
            connection.send(answer)
        except OSError:  # the run is gone
            break
    # A run left open (its driver died before `end`) stays RUNNING for `jobs.tracking.orphans` to find: its driver
    # is gone, so a later run marks it failed and deletes its files. Leaving any other way would end it: the open
    # run's generator, finalised with this frame, ends it FAILED, and MLflow's exit handler FINISHED.
    os._exit(0)


def _picklable(exc: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return True


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
