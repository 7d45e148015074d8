"""`score validate`: check the selected partitions against the job's contract; no model, no output.

For data scientists trying a new contract or a new partition. Uses the same planning, reading and
checks as `score run`, so what passes here passes there.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from jobs.columns import REASONS
from jobs.contracts import reports
from jobs.engines import cluster
from jobs.engines.inline import checked_inline, runs_inline
from jobs.engines.pipeline import check
from jobs.errors import ContractFailure, RuntimeFailure
from jobs.plan.plan import make_validation_plan
from jobs.spec.load import LoadedSpec, load_spec
from jobs.stages.drift import fail_drifted


def validate_job(
    job: str | Path | LoadedSpec,
    partitions: str | list[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    raise_on_failure: bool = True,
) -> dict[str, Any]:
    """The contract report of the selected partitions. If a row fails, raises ContractFailure (with `.report`),
    as a script or scheduler wants; `raise_on_failure=False` returns the report instead, as a notebook wants
    (`report["rows_failed"]` and `report["failures"]` say what failed)."""
    started = time.monotonic()
    loaded = job if isinstance(job, LoadedSpec) else load_spec(job, overrides)
    plan = make_validation_plan(loaded, partitions)
    inline = runs_inline(loaded.spec, plan.selection.num_rows)  # the engine `score run` would choose
    if inline:
        batches: Iterable[pa.Table] = checked_inline(plan.checks, {})
    else:
        cluster.start(loaded.spec.engine)
        cluster.workers_code(loaded.spec.engine)
        batches = check(plan)
    checked = fail_drifted(list(plan.selection.files), plan.drifted, plan.checks.file_schema, None, "validate")
    for batch in batches:
        checked.rows_seen += batch.num_rows
        checked.count_failed(batch.filter(pc.is_valid(batch.column(REASONS))), plan.selection.partitioning)
    rows, rows_failed = checked.rows_seen, checked.rows_failed
    report = reports.contract_report(
        plan.contract,
        rows,
        dict(checked.reasons),
        checked.examples,
        rows_failed,
        by_partition=reports.partition_counts(
            {label: sum(f.num_rows for f in files) for label, files in plan.selection.by_partition().items()},
            checked.rows_failed_by_partition,
            checked.reasons_by_partition,
        ),
        job=loaded.spec.name,
        partitions=",".join(plan.selection.labels),
        engine="inline" if inline else "ray",
        duration_s=round(time.monotonic() - started, 3),
    )
    if rows != plan.selection.num_rows:
        raise RuntimeFailure(f"checked {rows} rows but the input files hold {plan.selection.num_rows}")
    if rows_failed and raise_on_failure:
        error = ContractFailure(
            f"contract {Path(plan.contract.path).name}: {rows_failed} of {rows} rows failed "
            f"in {','.join(plan.selection.labels)}"
        )
        error.report = report
        raise error
    return report
