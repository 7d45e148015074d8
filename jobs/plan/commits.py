"""A run's commits, made from its plan and the files it wrote: the lineage record each output commit carries,
and the two commits (quarantine table, then output table) that make one group of the run visible at once.

Two tables cannot share one Delta transaction: if the output commit fails after the quarantine one, the
quarantine commit is undone so that neither keeps the run. A driver that died between the two left a
quarantine commit without its output commit: the re-run of the same run key removes those rows in its own
quarantine commit, so none are duplicated.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import replace
from pathlib import Path

from jobs.errors import ScoreError
from jobs.hive import PartitionValue
from jobs.inputs import fingerprint, partition_label
from jobs.models.artifacts import ModelArtifact
from jobs.plan.plan import Plan
from jobs.stages.sink import WrittenFiles
from jobs.storage import redact_uri
from jobs.tables import delta
from jobs.tables.lineage import CommitInfo, InputRecord, OutputRecord, Role, RunRecord, half_committed_runs, parse_time
from jobs.tracking.code_version import code_version


def commit_group(plan: Plan, written: WrittenFiles, record: RunRecord) -> tuple[int, int | None]:
    """Commit the quarantine table (when on), then the output table, both under the run id; the output commit
    carries the lineage `record` and the run key. Returns the output and quarantine versions."""
    spec = plan.job.spec
    info = {
        CommitInfo.RUN_ID: record.run_id,
        CommitInfo.RUN_KEY: record.run_key,
        CommitInfo.JOB: spec.name,
        CommitInfo.PARTITIONS: ",".join(plan.selection.labels),
        CommitInfo.MODEL_VERSION: plan.model.version,
        CommitInfo.MODEL_SHA256: plan.model.sha256,
        CommitInfo.SPEC_HASH: plan.job.spec_hash,
        CommitInfo.COST: f"{record.cost['total']:.6f} {record.cost['currency']}"
        if record.cost and record.cost["total"] is not None
        else None,
    }
    replaced = plan.replaced_partitions()
    quarantine_version = challenger_version = None
    if plan.quarantine is not None:
        dead = [
            run_id
            for run_id, run_key in half_committed_runs(plan.output.uri, plan.quarantine.uri)
            if run_key == plan.run_key
        ]
        quarantine_version = delta.commit(
            plan.quarantine,
            written.quarantine_files,
            replaced,
            {**info, CommitInfo.ROWS: written.rows_quarantined, CommitInfo.ROLE: Role.QUARANTINE},
            discard_runs=dead,
        )
    try:
        if plan.challenger is not None and record.challenger is not None:
            challenger = plan.challenger
            mine = replace(
                record,
                table=Path(challenger.target.uri).name,
                model=model_record(challenger.model),
                quarantine_table=None,
                challenger=None,
                monitoring=None,
                outputs=[replace(o, rows_scored=n) for o, n in _rows_of(record.outputs, written.challenger_files)],
            )
            challenger_version = delta.commit(
                challenger.target,
                written.challenger_files,
                replaced,
                {
                    **info,
                    CommitInfo.MODEL_VERSION: challenger.model.version,
                    CommitInfo.MODEL_SHA256: challenger.model.sha256,
                    CommitInfo.ROWS: sum(f["rows"] for f in written.challenger_files),
                    CommitInfo.ROLE: Role.CHALLENGER,
                    CommitInfo.LINEAGE: mine.to_json(),
                },
            )
            record = replace(record, challenger={**record.challenger, "version": challenger_version})
        record = replace(record, quarantine_version=quarantine_version)
        version = delta.commit(
            plan.output,
            written.files,
            replaced,
            {
                **info,
                CommitInfo.ROWS: written.rows_scored,
                CommitInfo.QUARANTINE_VERSION: quarantine_version,
                CommitInfo.LINEAGE: record.to_json(),
            },
            run_key=plan.run_key,
        )
    except (Exception, KeyboardInterrupt) as exc:
        # The run's output files go first: on a full disk they free the room the undos' own commits need.
        with contextlib.suppress(OSError):
            delta.discard_run_files(plan.output.uri, record.run_id, plan.output.read_version)
        committed = [
            (target.uri, v)
            for target, v in (
                (plan.quarantine, quarantine_version),
                (plan.challenger.target if plan.challenger else None, challenger_version),
            )
            if target is not None and v is not None
        ]
        for uri, committed_version in committed:
            previous = committed_version - 1 if committed_version > 0 else None  # None: this run created it
            stuck = delta.undo_commit(uri, committed_version, previous, record.run_id)
            if stuck and isinstance(exc, ScoreError):
                raise type(exc)(f"{exc}; {stuck}") from None
        raise
    return version, quarantine_version


def run_record(
    plan: Plan,
    written: WrittenFiles,
    run_id: str,
    experiment_id: str,
    scored_at: dt.datetime,
    code_sha256: str,
    engine: str,
    monitoring: dict | None = None,
    cost: dict | None = None,
    challenger: dict | None = None,
) -> RunRecord:
    """The lineage of one group of a run as its output commit will record it."""
    spec, model, contract = plan.job.spec, plan.model, plan.contract
    inputs = [
        InputRecord(label, fingerprint(files), [f.record() for f in files], sum(f.num_rows for f in files))
        for label, files in plan.selection.by_partition().items()
    ]
    scored_rows, quarantined_rows = _rows_by_partition(written.files), _rows_by_partition(written.quarantine_files)
    at = scored_at.isoformat(timespec="seconds")
    outputs = [
        OutputRecord(
            label,
            scored_rows.get(label, 0),
            quarantined_rows.get(label, 0),
            written.watermarks.get(label) or _date_of(values),
            at,
        )
        for label, values in plan.output_partitions().items()
    ]
    return RunRecord(
        run_id=run_id,
        run_key=plan.run_key,
        job=spec.name,
        table=spec.output.table,
        spec_hash=plan.job.spec_hash,
        spec_yaml=plan.job.to_yaml(),
        code_version=code_version(),
        model=model_record(model),
        contract={
            "path": redact_uri(plan.job.project_path(contract.path)),
            "sha256": contract.sha256,
            "expectations": len(contract.expectations),
            "on_failure": spec.on_failure,
        }
        if contract
        else None,
        tracking={"uri": redact_uri(spec.tracking.uri), "experiment_id": experiment_id, "run_id": run_id},
        input_base=redact_uri(plan.selection.base),
        input_fingerprint=plan.selection.fingerprint,
        inputs=inputs,
        outputs=outputs,
        max_age=spec.output.max_age,
        quarantine_table=redact_uri(plan.quarantine.uri) if plan.quarantine else None,
        code_sha256=code_sha256,
        engine=engine,
        devices=dict(written.devices),
        monitoring=monitoring,
        cost=cost,
        challenger=challenger,
    )


def model_record(model: ModelArtifact) -> dict:
    """A concrete model as lineage records it."""
    return {
        "uri": redact_uri(model.uri),
        "version": model.version,
        "sha256": model.sha256,
        "registry_name": model.registry_name,
        "runtime": model.runtime,
        "resolved_uri": redact_uri(
            f"models:/{model.registry_name}/{model.version}" if model.registry_name else model.path
        ),
    }


def _rows_of(outputs: list, files: list[dict]) -> list[tuple]:
    """Each output partition's record with the rows `files` hold of it."""
    rows = _rows_by_partition(files)
    return [(o, rows.get(o.partition, 0)) for o in outputs]


def _rows_by_partition(files: list[dict]) -> dict[str, int]:
    rows: dict[str, int] = {}
    for f in files:
        label = partition_label(tuple(f["partition_values"].items()))
        rows[label] = rows.get(label, 0) + f["rows"]
    return rows


def _date_of(values: dict[str, PartitionValue]) -> str | None:
    """A partition without event times is as new as its date value, when it has one."""
    for value in values.values():
        if value is None:
            continue
        try:
            return parse_time(value).isoformat()
        except ValueError:
            continue
    return None
