"""The failures a user can cause, each mapped to the exit code schedulers act on.

Anything else that escapes a run is a bug or an environment failure and exits 1 with a traceback.
"""

from __future__ import annotations

import re
from typing import Any

# A traceback's last line, `module.ClassName: message`, as Ray carries a worker's error in text (ONNX
# Runtime's classes, such as InvalidProtobuf, do not end in Error).
ERROR_LINE = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Z]\w*): (.+)$", re.MULTILINE)


class ScoreError(Exception):
    """Base of user-facing failures: the message names what to fix; no traceback is shown."""

    exit_code = 1


class RuntimeFailure(ScoreError):
    """The run started but could not finish (a worker died, storage refused a write)."""

    exit_code = 1


class RetryableFailure(RuntimeFailure):
    """Nothing was committed and running again is safe: the run lost a race to another run of the same
    partitions, or storage stayed unreachable through its retries. A scheduler may retry on this code."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, the operation may be retried


class UsageError(ScoreError):
    """Bad spec, bad flag, missing partition, unusable model: fixable before any data is read."""

    exit_code = 2


class SpecError(UsageError):
    """A job spec that does not load or validate; names the file and the key."""

    def __init__(self, file: str, key: str | None, reason: str) -> None:
        self.file, self.key, self.reason = file, key, reason
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {reason}")


class ContractFailure(ScoreError):
    """The input broke its data contract; nothing was committed."""

    exit_code = 3
    report: dict[str, Any] | None = None  # `score validate`'s contract report, when it raised this


class Stale(ScoreError):
    """A table's newest data is older than its freshness limit (for sensors and alerting)."""

    exit_code = 4


class DriftFailure(ScoreError):
    """The scored rows drifted from the baseline past a threshold under `monitoring.on_drift: fail`; nothing was
    committed. Not retried: the same input drifts again; look at the report, then change the input, the baseline
    or the thresholds."""

    exit_code = 5


EXIT_OK = 0
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: the run cleaned up, nothing was committed


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def one_line(exc: BaseException) -> str:
    """An error's whole text on one line, as a message may quote it: delta-rs and object_store nest their causes
    over several lines, coloured and marked with `↳`."""
    lines = [line.strip().lstrip("↳").strip() for line in _ANSI.sub("", str(exc)).splitlines()]
    return ": ".join(line for line in lines if line) or type(exc).__name__


def first_line(exc: BaseException) -> str:
    """An exception's first line of text (libraries put whole tracebacks or JSON after it), else its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
