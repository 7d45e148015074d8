"""The machine-readable outcome of a run: what `score run --json` prints, `run_job` returns and MLflow records."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from jobs.tracking.tags import Metric


@dataclass
class RunSummary:
    """The machine-readable outcome of a run (`score run --json` prints exactly this).

    `status`: succeeded, failed, up_to_date (`unscored` found nothing new) or already_committed (a retry
    of a run key that committed: `run_id` and `table_version` are that run's)."""

    status: str
    job: str
    run_id: str | None = None
    run_key: str | None = None
    message: str | None = None
    table: str | None = None
    table_uri: str | None = None
    table_version: int | None = None  # the run's last commit
    table_versions: list[int] = field(default_factory=list)  # each commit: one, or one per output.commit_every group
    partitions: list[str] = field(default_factory=list)
    rows_in: int = 0
    rows_scored: int = 0
    rows_quarantined: int = 0
    rows_reused: int = 0  # scoring.reuse: rows whose earlier score was kept (no model saw them)
    quarantine_version: int | None = None
    model_uri: str | None = None
    model_version: str | None = None
    model_sha256: str | None = None
    tracking_uri: str | None = None
    input_fingerprint: str | None = None
    input_watermark: str | None = None
    freshness_lag_s: float | None = None
    contract: dict[str, Any] | None = None
    engine: str | None = None  # ray, or inline (a small local run scored in the driver: engine.inline_max_rows)
    devices: dict[str, int] = field(default_factory=dict)  # rows by the device the model ran on
    # monitoring.drift: {baseline: {table, version}, columns: [ColumnDrift.to_dict(), ...] (most drifted first),
    # drifted: [column, ...], profiles_version, profiles_error}; None when drift is off
    drift: dict[str, Any] | None = None
    # model.challenger: {model, table, version, agreement: {segment: {column: {rows, label_agreement,
    # mean_abs_diff, max_abs_diff, correlation}}}}, the whole ("(all)") first
    challenger: dict[str, Any] | None = None
    duration_s: float = 0.0
    # where the run's time went: the driver's phases (plan, track, start, pipeline, commit, record; they add up
    # to about duration_s), and in busy_seconds the seconds the pipeline's workers spent in each stage (tally,
    # check, score, write), summed over workers: more than the pipeline's wall time when stages overlap
    seconds: dict[str, float] = field(default_factory=dict)
    busy_seconds: dict[str, float] = field(default_factory=dict)
    rows_per_s: float = 0.0
    # CPU- and GPU-seconds by stage (busy_seconds times what one worker of the stage holds), and with prices in
    # `cost`, the run's cost and cost per million input rows (jobs.commands.cost)
    cost: dict[str, Any] | None = None
    exit_code: int = 0
    error: str | None = None

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the time the block takes to `seconds[phase]`."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[phase] = round(self.seconds.get(phase, 0.0) + time.monotonic() - started, 3)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def _repr_html_(self) -> str:
        """A notebook shows the summary as the table `score run` prints at the end (`jobs.commands.display`)."""
        from jobs.commands.display import summary_html  # display reads this class's fields: imported late

        return summary_html(self)

    def metrics(self) -> dict[str, float]:
        """The run's MLflow metrics: its counts; once it succeeded, its throughput, version and lag too. The headline
        ones are `Metric`'s (capitalised sections, which MLflow lists first), the detail lowercase."""
        metrics: dict[str, float] = {
            Metric.ROWS_IN: self.rows_in,
            Metric.ROWS_SCORED: self.rows_scored,
            Metric.ROWS_QUARANTINED: self.rows_quarantined,
            Metric.ROWS_REUSED: self.rows_reused,
            Metric.FAILED: (self.contract or {}).get("rows_failed", 0),  # also null model inputs without a contract
            Metric.DURATION: self.duration_s,
        }
        metrics.update({f"seconds/{phase}": spent for phase, spent in self.seconds.items()})
        metrics.update({f"busy_seconds/{stage}": spent for stage, spent in self.busy_seconds.items()})
        if self.cost:
            metrics.update({f"cpu_seconds/{stage}": spent for stage, spent in self.cost["cpu_seconds"].items()})
            metrics.update({f"gpu_seconds/{stage}": spent for stage, spent in self.cost["gpu_seconds"].items()})
            if self.cost["total"] is not None:
                metrics[Metric.COST] = self.cost["total"]
            if self.cost["per_million_rows"] is not None:
                metrics[Metric.COST_PER_MILLION_ROWS] = self.cost["per_million_rows"]
        if self.status == "succeeded":
            metrics[Metric.ROWS_PER_S] = self.rows_per_s
            if self.table_version is not None:
                metrics[Metric.TABLE_VERSION] = self.table_version
            if self.freshness_lag_s is not None:
                metrics[Metric.FRESHNESS_LAG] = self.freshness_lag_s
        return metrics
