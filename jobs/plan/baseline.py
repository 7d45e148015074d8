"""What a run's drift is measured against (`monitoring.baseline`), and the measurement itself.

The baseline is the profiles of one earlier output version, found before the run scores a row, so a
`version N` or `TABLE@N` that has no profiles fails the run at plan time. `previous` is the newest profiled
version at or before the one the run read: on a daily job, yesterday's run; on a re-score, the last scoring of
the same rows. A table's first run has no baseline and measures no drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.errors import UsageError
from jobs.monitoring.drift import ColumnDrift, table_drift
from jobs.monitoring.profiles import ColumnProfile
from jobs.plan.plan import Plan
from jobs.spec.schema import baseline_of
from jobs.storage import redact_uri
from jobs.tables.profile_table import profiled_versions, profiles_table, read_profiles


@dataclass(frozen=True)
class Baseline:
    table: str  # the output table whose version it is
    version: int | None  # None: nothing to compare with (the table's first profiled run)
    profiles: dict[str, ColumnProfile] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"table": self.table, "version": self.version}


def load_baseline(plan: Plan) -> Baseline:
    spec = plan.job.spec
    table, version = baseline_of(spec.monitoring.baseline)
    table = table or spec.output.table
    uri = spec.table_uri(profiles_table(table))
    versions = profiled_versions(uri)
    if table == spec.output.table and version is None:
        read = plan.output.read_version
        earlier = [v for v in versions if read is not None and v <= read]
        return Baseline(table, earlier[-1], read_profiles(uri, earlier[-1])[0]) if earlier else Baseline(table, None)
    if version not in versions:
        has = f"versions {', '.join(map(str, versions[-10:]))} have" if versions else "no version has"
        raise UsageError(
            f"{plan.job.file}: monitoring.baseline {spec.monitoring.baseline!r}: version {version} of {table} has no "
            f"profiles ({has} them, in {redact_uri(uri)}): name a version that has, or use previous"
        )
    return Baseline(table, version, read_profiles(uri, version)[0])


def measure_drift(plan: Plan, baseline: Baseline, current: dict[str, ColumnProfile]) -> list[ColumnDrift]:
    """The drift of the scored rows' profiles (column -> profile, every partition merged) against `baseline`."""
    if baseline.version is None:
        return []
    return table_drift(baseline.profiles, current, plan.job.spec.monitoring.threshold_of)
