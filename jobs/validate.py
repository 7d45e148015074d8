"""`score validate`: check the selected partitions against the job's contract; no model, no output.

For data scientists trying a new contract or a new partition. Uses the same planning, reading and
checks as `score run`, so what passes here passes there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from jobs.errors import ContractFailure, RuntimeFailure
from jobs.spec import LoadedSpec, load_spec


def validate_job(
    job: str | Path | LoadedSpec,
    partitions: str | list[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """The contract report of the selected partitions. Raises ContractFailure (with `.report`) if a row fails."""
    from jobs import engine, reports
    from jobs.drift import fail_drifted
    from jobs.pipeline import check
    from jobs.plan import make_validation_plan

    started = time.monotonic()
    loaded = job if isinstance(job, LoadedSpec) else load_spec(job, overrides)
    plan = make_validation_plan(loaded, partitions)
    pool = engine.size_pool(loaded.spec.scoring, engine.start(loaded.spec.engine))
    batches = check(plan, pool)

    checked = fail_drifted(list(plan.selection.files), plan.drifted, None, "validate")
    for batch in batches:
        checked.rows_seen += batch["rows"]
        checked.rows_failed += batch["rows_failed"]
        checked.reasons.update(json.loads(batch["failures"]))
        for key, values in json.loads(batch["examples"]).items():
            checked.add_examples(key, values)
    rows, rows_failed = checked.rows_seen, checked.rows_failed
    report = reports.contract_report(
        plan.contract, rows, dict(checked.reasons), checked.examples, rows_failed,
        job=loaded.spec.name, partitions=",".join(plan.selection.labels),
        duration_s=round(time.monotonic() - started, 3),
    )
    if rows != plan.selection.num_rows:
        raise RuntimeFailure(f"checked {rows} rows but the input files hold {plan.selection.num_rows}")
    if rows_failed:
        error = ContractFailure(
            f"contract {Path(plan.contract.path).name}: {rows_failed} of {rows} rows failed "
            f"in {','.join(plan.selection.labels)}"
        )
        error.report = report
        raise error
    return report
