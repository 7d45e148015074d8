"""What a person at a terminal, or a scheduler's log file, sees of a run.

A terminal gets a few plain lines, one progress line redrawn in place (rows scored of the total, rows/s,
time left, rows quarantined so far) and a summary table. A log (Airflow, cron: not a terminal) gets the same
facts as timestamped lines, a progress line every `engine.progress_every`, and never a bar or a carriage
return. Everything goes to one stream (stderr: stdout is kept for `--json`).
"""

from __future__ import annotations

import datetime as dt
import faulthandler
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from jobs.errors import EXIT_INTERRUPTED

# Types only: the CLI imports this module first, to quiet the libraries (`hush_libraries`) before any of them
# (pyarrow, pydantic, deltalake, Ray, MLflow) is imported; `score --help` then answers in 0.07 s.
if TYPE_CHECKING:
    from jobs.inputs import InputSelection
    from jobs.models.artifacts import ModelArtifact
    from jobs.spec.schema import EngineSpec

REDRAW_S = 0.25  # a terminal's progress line is redrawn at most this often


@dataclass
class Counts:
    """Rows a run has been through so far (scored, or set aside), and of those quarantined, for the display."""

    done: int = 0
    quarantined: int = 0


class Console:
    """`say` a line, show `progress`, then `table` at the end; thread-safe (progress comes from a watcher thread)."""

    def __init__(self, stream: TextIO, tty: bool | None = None, progress: bool = True, every_s: float = 30.0) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.redraw = self.tty  # the progress line is redrawn in place (else: a line every `every_s`)
        self.show_progress, self.every_s = progress, every_s
        self._lock = threading.Lock()
        self._started: float | None = None
        self._last_drawn = 0.0
        self._line_open = False

    def follow(self, engine: EngineSpec) -> None:
        """Take the job's display settings: `engine.progress_bars` and `engine.progress_every`."""
        self.show_progress = engine.progress_bars != "off"
        self.redraw = self.tty or engine.progress_bars == "on"
        self.every_s = engine.progress_every_s

    def say(self, text: str) -> None:
        with self._lock:
            self._clear()
            self._write(self._stamp(f"score: {text}") + "\n")

    def progress(self, counts: Counts, total: int) -> None:
        """Rows done of `total`; drawn on a terminal at most every REDRAW_S, logged every `every_s` elsewhere."""
        if not self.show_progress:
            return
        now = time.monotonic()
        with self._lock:
            if self._started is None:
                self._started, self._last_drawn = now, now if not self.redraw else 0.0
            if now - self._last_drawn < (REDRAW_S if self.redraw else self.every_s):
                return
            self._last_drawn = now
            text = progress_text(counts, total, now - self._started)
            if self.redraw:
                self._write("\r\x1b[2K" + text)
                self._line_open = True
            else:
                self._write(self._stamp(f"score: {text}") + "\n")

    def counting(self, before: Counts, total: int) -> Callable[[dict[str, int]], None]:
        """The progress callback of one execution (stage -> rows, jobs.engines.progress), on top of the rows of the
        executions `before` it (a run committing in groups runs one per group)."""

        def show(rows: dict[str, int]) -> None:
            self.progress(
                Counts(before.done + rows.get("score", 0), before.quarantined + rows.get("quarantine", 0)), total
            )

        return show

    def done(self) -> None:
        """End the progress display (the next line starts clean)."""
        with self._lock:
            self._clear()
            self._started = None

    def table(self, rows: list[tuple[str, str]]) -> None:
        """A summary as aligned `name  value` lines (a terminal), or one `name: value; ...` line (a log); an
        empty name continues the row above."""
        with self._lock:
            self._clear()
            if self.tty:
                width = max(len(name) for name, _ in rows)
                self._write("".join(f"  {name:<{width}}  {value}\n" for name, value in rows))
            else:
                self._write(self._stamp("score: " + "; ".join(f"{n}: {v}" if n else v for n, v in rows)) + "\n")

    def _clear(self) -> None:
        if self._line_open:
            self._write("\r\x1b[2K")
            self._line_open = False

    def _write(self, text: str) -> None:
        """Write and flush; a terminal or pipe that went away costs the display, never the run."""
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.show_progress = False

    def _stamp(self, text: str) -> str:
        if self.tty:
            return text
        return f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} {text}"


def notebook_console() -> Console | None:
    """The console of a Jupyter kernel, whose cells show stderr: `run_job` called there without one still shows
    its lines, progress (redrawn in place: Jupyter honours the carriage return) and summary. None elsewhere: a
    script or a library calling `run_job` gets log records only."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return None
    return Console(sys.stderr, tty=True)


def progress_text(counts: Counts, total: int, elapsed_s: float) -> str:
    """e.g. "scoring 1,200,000 of 2,800,000 rows (43%), 95,000 rows/s, 0:17 left, 12 quarantined"."""
    done = counts.done
    share = f" ({100 * done / total:.0f}%)" if total else ""
    text = f"scoring {done:,} of {total:,} rows{share}"
    if elapsed_s > 0 and done:
        rate = done / elapsed_s
        left = max(total - done, 0) / rate
        text += f", {rate:,.0f} rows/s, {_clock(left)} left"
    if counts.quarantined:
        text += f", {counts.quarantined:,} quarantined"
    return text


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def describe_selection(selection: InputSelection) -> str:
    """e.g. "3 partitions (ds=2026-11-22 .. ds=2026-11-24), 6 files, 1,200,000 rows"."""
    labels = selection.labels
    span = labels[0] if len(labels) == 1 else f"{labels[0]} .. {labels[-1]}"
    return (
        f"{len(labels)} partition{'s' if len(labels) != 1 else ''} ({span}), {len(selection.files)} "
        f"file{'s' if len(selection.files) != 1 else ''}, {selection.num_rows:,} rows"
    )


def describe_model(model: ModelArtifact) -> str:
    """e.g. "churn v3 (sha256 1a2b3c4d5e6f)", or the file's name for a model given by path."""
    name = model.registry_name or Path(model.path).name
    version = f" v{model.version}" if model.registry_name else ""
    return f"{name}{version} (sha256 {model.sha256[:12]})"


def hush_libraries(verbose: bool, divert: bool = True) -> int | None:
    """Keep the terminal for our own lines: unless `verbose`, libraries' warnings and logs (Ray, Great
    Expectations, MLflow) are off and, with `divert`, what native code writes straight to file descriptor 2
    (Ray's C++ core worker, ONNX Runtime) goes to an unnamed temporary file, whose descriptor is returned for
    `settle_native_output`. Unnamed, so that a killed run leaves nothing behind; Python's faulthandler, when on
    (PYTHONFAULTHANDLER), still writes a crash's stack to the terminal. Call it before Ray or MLflow is
    imported."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if verbose:
        logging.getLogger("great_expectations").setLevel(logging.WARNING)  # not its registration chatter
        return None
    warnings.simplefilter("ignore")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    if not divert:
        return None
    native = tempfile.TemporaryFile(prefix="score-native-")
    terminal = os.dup(2)
    os.dup2(native.fileno(), 2)
    sys.stderr = os.fdopen(terminal, "w", buffering=1, errors="backslashreplace")
    if faulthandler.is_enabled():
        faulthandler.enable(file=sys.stderr)
    return os.dup(native.fileno())


def settle_native_output(native: int | None, code: int) -> None:
    """When the command failed (exit code `code`) and native code wrote anything, keep it in a file and say
    where; an interrupted run's is dropped with the rest."""
    if native is None:
        return
    size = os.fstat(native).st_size
    if code not in (0, EXIT_INTERRUPTED) and size:
        handle, path = tempfile.mkstemp(prefix="score-native-", suffix=".log")
        os.write(handle, os.pread(native, size, 0))
        os.close(handle)
        print(f"score: native output (Ray, ONNX Runtime) of this run is in {path}", file=sys.stderr)
    os.close(native)


def versions_text(versions: Iterable[int]) -> str:
    """ "v7", or "v5, v6, v7" for the commits of a run that committed in groups."""
    return ", ".join(f"v{n}" for n in sorted(versions))
