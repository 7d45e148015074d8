"""One scoring run, top to bottom: spec -> plan -> track -> execute -> check -> commit -> record.

This is the only place the stages meet. `run_job` is what the CLI, notebooks and tests call.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from jobs.console import Console, Counts, describe_model, describe_selection, versions_text
from jobs.errors import ERROR_LINE, EXIT_INTERRUPTED, ContractFailure, RuntimeFailure, ScoreError
from jobs import endpoints
from jobs.faults import inject
from jobs.inputs import fingerprint, partition_label
from jobs.lineage import InputRecord, OutputRecord, RunRecord, parse_time
from jobs.plan import NothingToScore, Plan, Progress, make_plan, progress_of
from jobs.sink import WrittenFiles
from jobs.spec import LoadedSpec, load_spec, redact_uri

log = logging.getLogger(__name__)


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
    duration_s: float = 0.0
    rows_per_s: float = 0.0
    exit_code: int = 0
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def run_job(
    job: str | Path | LoadedSpec,
    partitions: str | list[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    run_key: str | None = None,
    force: bool = False,
    console: Console | None = None,
    limit: int | None = None,
    table: str | None = None,
    lock: bool = False,
) -> RunSummary:
    """Score the selected partitions of one job and commit them as one new table version (one per group of
    `output.commit_every` partitions).

    A run whose key (given, or derived from job, spec, input files, model and contract) already committed
    returns at once (`force` runs it anyway), as does an `unscored` run that finds nothing new.
    Raises UsageError (bad spec, partition, model: nothing started), ContractFailure (nothing committed)
    or RuntimeFailure; anything else is a bug or an environment failure. Every exception raised after the
    spec loaded carries the partial RunSummary as `.summary`, for reporting. A `console` shows what the run
    does as it goes (the CLI's); without one, those lines are logged at INFO. `limit` scores a sample of that
    many rows of the selected partitions into `table` (never the job's own): an ad-hoc check. `lock` refuses to
    start while another run of the job holds its lock on this host (RetryableFailure; `jobs.locks`).
    """
    started = time.monotonic()
    loaded = job if isinstance(job, LoadedSpec) else load_spec(job, overrides)
    spec = loaded.spec
    if lock:
        from jobs.locks import job_lock

        with job_lock(loaded.root, spec.name):
            return run_job(loaded, partitions, overrides, run_key, force, console, limit, table)
    if console is not None:
        console.follow(spec.engine)
    say = console.say if console is not None else log.info
    sample = f"a sample of {limit:,} rows of " if limit is not None else ""
    say(f"{spec.name}: selecting {sample}{partitions or spec.input.partitions} of {redact_uri(spec.input.path)}, "
        f"model {redact_uri(spec.model.uri)}")
    if limit is not None:
        from jobs.samples import sample_job

        loaded, partitions = sample_job(loaded, limit, table, partitions), None
        spec = loaded.spec
    summary = RunSummary(status="failed", job=spec.name, table=spec.output.table,
                         table_uri=redact_uri(spec.table_uri()), tracking_uri=redact_uri(spec.tracking.uri))
    try:
        endpoints.check_job(spec)  # a server that is down fails the run now, not after minutes of retries
        try:
            plan = make_plan(loaded, partitions, run_key)
        except NothingToScore as nothing:
            summary.status, summary.message = "up_to_date", str(nothing)
            summary.model_uri, summary.model_version = redact_uri(nothing.model.uri), nothing.model.version
            summary.model_sha256, summary.table_version = nothing.model.sha256, nothing.table_version
            return summary
        done = Progress([], [], plan.selection.labels) if force else progress_of(plan)
        summary.run_key, summary.model_uri = plan.run_key, redact_uri(plan.model.uri)
        summary.model_version, summary.model_sha256 = plan.model.version, plan.model.sha256
        summary.partitions, summary.rows_in = plan.selection.labels, plan.selection.num_rows
        summary.input_fingerprint = plan.selection.fingerprint
        by = (f"{spec.output.table} {versions_text(r.table_version for r in done.commits)} by run "
              f"{', '.join(dict.fromkeys(r.run_id for r in done.commits))}")
        if not done.todo:
            summary.status, summary.run_id = "already_committed", done.commits[0].run_id
            summary.table_version = done.commits[0].table_version
            summary.table_versions = sorted(run.table_version for run in done.commits)
            summary.message = f"run key {plan.run_key} already committed as {by}; nothing written"
            return summary
        if done.committed:
            summary.message = (f"resumed run key {plan.run_key}: {len(done.committed)} of its partitions were "
                               f"committed as {by}; scoring the other {len(done.todo)}")
            say(f"{spec.name}: {summary.message}")
            plan = plan.restricted(done.todo)
            summary.partitions, summary.rows_in = plan.selection.labels, plan.selection.num_rows
        say(f"{spec.name}: {describe_selection(plan.selection)}; model {describe_model(plan.model)}; "
            f"run key {plan.run_key}")
        _score(plan, summary, started, console)
    except (Exception, KeyboardInterrupt) as exc:  # every failure carries its summary: `--json` prints it
        summary.exit_code = exc.exit_code if isinstance(exc, ScoreError) else (
            EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else 1)
        summary.error = str(exc) if isinstance(exc, ScoreError) else f"{type(exc).__name__}: {exc}"
        summary.duration_s = round(time.monotonic() - started, 3)
        exc.summary = summary
        raise
    return summary


def _score(plan: Plan, summary: RunSummary, started: float, console: Console | None) -> None:
    import mlflow

    from jobs import engine, orphans, tracking
    from jobs.tables import discard_run_files

    spec = plan.job.spec
    say = console.say if console is not None else log.info
    inline = engine.runs_inline(spec, plan.selection.num_rows)
    summary.engine = "inline" if inline else "ray"
    say(f"{spec.name}: scoring in this process (at most engine.inline_max_rows {spec.engine.inline_max_rows:,} rows)"
        if inline else f"{spec.name}: starting Ray" + (f" on {spec.engine.address}" if spec.engine.address else ""))
    ray_started = None if inline else engine.start_soon(spec.engine)
    tracking.connect(spec.tracking)
    for dead in orphans.reap(spec.tracking):  # earlier runs whose driver was killed: marked failed, files deleted
        say(f"earlier run {dead.run_id} ({dead.job}): {dead.why}")
    with mlflow.start_run(run_name=f"{spec.name} {plan.selection.labels[0]}") as run:
        summary.run_id = run_id = run.info.run_id
        experiment_id = run.info.experiment_id
        mlflow.set_tags(orphans.driver_tags({redact_uri(t.uri): t.read_version
                                             for t in (plan.output, plan.quarantine) if t is not None}))
        _record_plan(plan)
        try:
            if inline:
                code_sha256 = engine.package_digest()
                mlflow.log_params({"engine": "inline"})
            else:
                ray_started.result()
                pool = engine.wait_for_pool(spec.scoring)
                code_sha256 = engine.workers_code(spec.engine)
                mlflow.log_params({"engine": "ray", "actors_min": pool.min_actors, "actors_max": pool.max_actors,
                                   "cpus_per_actor": pool.cpus_per_actor, "gpus_per_actor": pool.gpus_per_actor,
                                   "threads_per_actor": pool.threads, "resources_per_actor": pool.resources})
            mlflow.set_tag("score.code_sha256", code_sha256)
            checked, rows_checked, marks, devices = WrittenFiles(), 0, [], Counter()  # checked: every group so far
            groups = plan.groups()  # one, unless output.commit_every: each group is one commit
            for group in groups:
                progress = None if console is None else console.counting(
                    Counts(rows_checked, checked.rows_quarantined), plan.selection.num_rows)
                written = _execute(group, run_id, None if inline else pool, progress)
                checked.merge(written)
                rows_checked += group.selection.num_rows
                summary.contract = _contract_summary(plan, checked)
                _record_contract(plan, checked, run_id, rows_checked)
                _check_counts(group, written)
                _check_contract(group, checked, rows_checked, summary)
                scored_at = dt.datetime.now(dt.timezone.utc)
                record = _run_record(group, written, run_id, experiment_id, scored_at, code_sha256, summary.engine)
                marks += [r.watermark for r in record.outputs if r.watermark]
                inject("commit")
                summary.table_version, summary.quarantine_version = _commit(group, written, record)
                summary.table_versions.append(summary.table_version)
                summary.rows_scored += written.rows_scored  # the summary counts committed rows only
                summary.rows_quarantined += written.rows_quarantined
                devices.update(written.devices)
                summary.devices = dict(devices)
                mlflow.set_tags({"score.table_version": str(summary.table_version),
                                 "score.table_versions": ",".join(map(str, summary.table_versions))})
                inject("committed")
                if len(groups) > 1:
                    say(f"{spec.name}: committed {spec.output.table} v{summary.table_version} "
                        f"({', '.join(group.selection.labels)})")
            mlflow.set_tag("score.devices", json.dumps(summary.devices))
            summary.input_watermark = max(marks, key=parse_time) if marks else None
            if summary.input_watermark:
                summary.freshness_lag_s = round((scored_at - parse_time(summary.input_watermark)).total_seconds(), 3)
        except (Exception, KeyboardInterrupt) as exc:
            if console is not None:
                console.done()
            for target in (plan.output, plan.quarantine):
                if target is not None:
                    discard_run_files(target.uri, run_id, target.read_version)
            summary.duration_s = round(time.monotonic() - started, 3)
            mlflow.set_tags({"error": str(exc)[:5000], "error.type": type(exc).__name__})
            _record_counts(summary)
            if isinstance(exc, KeyboardInterrupt):  # Ctrl-C or SIGTERM: stopped, not broken
                mlflow.end_run("KILLED")
            raise
        if console is not None:
            console.done()
        summary.status = "succeeded"
        summary.duration_s = round(time.monotonic() - started, 3)
        summary.rows_per_s = round(summary.rows_in / summary.duration_s, 1) if summary.duration_s else 0.0
        _record_result(summary)
        _record_charts(plan, summary.table_version)


def _execute(plan: Plan, run_id: str, pool, on_progress: Callable[[dict[str, int]], None] | None) -> WrittenFiles:
    """Score one plan's rows on Ray (with `pool`), or in this process when `pool` is None."""
    from jobs.drift import fail_drifted

    try:
        if pool is None:
            from jobs.inline import execute_inline

            written = execute_inline(plan, run_id, on_progress)
        else:
            from jobs.pipeline import execute

            written = execute(plan, run_id, pool, on_progress)
    except ScoreError:  # ours, raised in the driver (a stall): already says what happened
        raise
    except Exception as exc:  # Ray wraps worker failures in its own errors: surface the cause
        raise RuntimeFailure(f"the scoring pipeline failed: {root_cause(exc)}") from exc
    written.merge(fail_drifted(list(plan.selection.files), plan.drifted, plan.quarantine, run_id))
    return written


def _check_contract(plan: Plan, checked: WrittenFiles, rows_checked: int, summary: RunSummary) -> None:
    """Fail the run when the rows that failed the contract (or, without one, any) exceed its policy's limits.

    With `output.commit_every` the limits hold for the rows of every group so far (`checked`), and the groups
    committed before this one stay."""
    policy = plan.job.spec.contract
    if policy:
        why = policy.exceeded(checked.rows_failed, rows_checked)
    else:
        why = "the job has no contract to quarantine them" if checked.rows_failed else None
    if not why:
        return
    name = f"contract {Path(plan.contract.path).name}" if plan.contract else "input"
    what = "nothing was committed"
    if summary.table_versions:
        what = (f"partitions {', '.join(plan.selection.labels)} were not committed; the groups committed before "
                f"them stay ({plan.job.spec.output.table} {versions_text(summary.table_versions)}), and a re-run "
                f"with run key {plan.run_key} scores only what is missing")
    raise ContractFailure(f"{name}: {checked.rows_failed} of {rows_checked} rows failed, {why} "
                          f"({_top_reasons(checked)}); {what}")


def _commit(plan: Plan, written, record: RunRecord) -> tuple[int, int | None]:
    """Commit the quarantine table (when on), then the output table, both under the run id; the output
    commit carries the lineage record and the run key.

    Two tables cannot share one Delta transaction: if the output commit fails after the quarantine one,
    the quarantine commit is undone so that neither keeps this run. A driver that died between the two
    left a quarantine commit without its output commit: the re-run of the same run key removes those
    rows in its own quarantine commit, so none are duplicated.
    """
    from jobs.tables import commit, undo_commit

    spec = plan.job.spec
    metadata = {
        "score.run_id": record.run_id,
        "score.run_key": record.run_key,
        "score.job": spec.name,
        "score.partitions": ",".join(plan.selection.labels),
        "score.model_version": plan.model.version,
        "score.model_sha256": plan.model.sha256,
        "score.spec_hash": plan.job.spec_hash,
    }
    replaced = plan.replaced_partitions()
    quarantine_version = None
    if plan.quarantine is not None:
        quarantine_version = commit(plan.quarantine, written.quarantine_files, replaced,
                                    {**metadata, "score.rows": written.rows_quarantined, "score.role": "quarantine"},
                                    discard_runs=_half_committed_runs(plan))
    try:
        record = replace(record, quarantine_version=quarantine_version)
        version = commit(plan.output, written.files, replaced,
                         {**metadata, "score.rows": written.rows_scored, "score.quarantine_version": quarantine_version,
                          "score.lineage": record.to_json()},
                         run_key=plan.run_key)
    except (Exception, KeyboardInterrupt) as exc:
        if quarantine_version is not None:
            previous = quarantine_version - 1 if quarantine_version > 0 else None  # None: this run created it
            stuck = undo_commit(plan.quarantine.uri, quarantine_version, previous, record.run_id)
            if stuck and isinstance(exc, ScoreError):
                raise type(exc)(f"{exc}; {stuck}") from None
        raise
    return version, quarantine_version


def _half_committed_runs(plan: Plan) -> list[str]:
    """Runs of this run key whose quarantine commit landed but whose output commit never did."""
    from jobs.lineage import history

    output_runs = {c.get("score.run_id") for c in history(plan.output.uri)}
    return sorted({c["score.run_id"] for c in history(plan.quarantine.uri)
                   if c.get("score.role") == "quarantine" and c.get("score.run_key") == plan.run_key
                   and c["score.run_id"] not in output_runs})


def _run_record(plan: Plan, written, run_id: str, experiment_id: str, scored_at: dt.datetime,
                code_sha256: str, engine: str) -> RunRecord:
    """The lineage of this run as its output commit will record it."""
    spec, model, contract = plan.job.spec, plan.model, plan.contract
    inputs = [
        InputRecord(label, fingerprint(files), [f.record() for f in files], sum(f.num_rows for f in files))
        for label, files in plan.selection.by_partition().items()
    ]
    scored_rows, quarantined_rows = _rows_by_partition(written.files), _rows_by_partition(written.quarantine_files)
    at = scored_at.isoformat(timespec="seconds")
    outputs = [
        OutputRecord(label, scored_rows.get(label, 0), quarantined_rows.get(label, 0),
                     written.watermarks.get(label) or _date_of(values), at)
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
        model={"uri": redact_uri(model.uri), "version": model.version, "sha256": model.sha256,
               "registry_name": model.registry_name, "runtime": model.runtime,
               "resolved_uri": redact_uri(f"models:/{model.registry_name}/{model.version}" if model.registry_name
                                          else model.path)},
        contract={"path": redact_uri(plan.job.project_path(contract.path)), "sha256": contract.sha256,
                  "expectations": len(contract.expectations), "on_failure": spec.contract.on_failure}
        if contract else None,
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
    )


def _rows_by_partition(files: list[dict]) -> dict[str, int]:
    rows: dict[str, int] = {}
    for f in files:
        label = partition_label(tuple(f["partition_values"].items()))
        rows[label] = rows.get(label, 0) + f["rows"]
    return rows


def _date_of(values: dict[str, str]) -> str | None:
    """A partition without event times is as new as its date value, when it has one."""
    for value in values.values():
        try:
            return parse_time(value).isoformat()
        except ValueError:
            continue
    return None


def root_cause(exc: BaseException) -> str:
    """What went wrong in a worker, without Ray's layers of wrapping.

    Ray carries the worker's traceback as text, in one of the exceptions chained by `__cause__` (the innermost
    may be an empty `SystemException`): the innermost that names an error not raised by Ray itself wins, and
    in it the last such line (TorchScript, for one, wraps the model's own error in a generic one).
    """
    chain = []
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__
    for link in reversed(chain):
        causes = [f"{name}: {message}" for name, message in ERROR_LINE.findall(str(link))
                  if not name.startswith("ray.")]
        if causes:
            return causes[-1]
    for link in reversed(chain):
        lines = [line for line in str(link).strip().splitlines() if line.strip()]
        if lines:
            return f"{type(link).__name__}: {lines[-1]}"
    return type(chain[-1]).__name__


def _check_counts(plan: Plan, written) -> None:
    """Nothing lost: every row counted in the input footers reached the writer, scored or failed."""
    rows_in = plan.selection.num_rows
    on_failure = plan.job.spec.on_failure
    unscored = {"warn": 0, "quarantine": written.rows_quarantined, "fail": written.rows_failed}[on_failure]
    if written.rows_seen != rows_in or written.rows_scored + unscored != rows_in or (
        on_failure == "quarantine" and written.rows_quarantined != written.rows_failed
    ):
        raise RuntimeFailure(
            f"row count mismatch: the input files hold {rows_in} rows, the pipeline saw {written.rows_seen} "
            f"({written.rows_scored} scored, {written.rows_quarantined} quarantined, {written.rows_failed} failed "
            "the contract); nothing was committed"
        )


def _top_reasons(written) -> str:
    return "; ".join(
        f"{key}: {count} rows, e.g. {', '.join(written.examples.get(key, []))}"
        for key, count in written.reasons.most_common(3)
    )


def _contract_summary(plan: Plan, written) -> dict[str, Any] | None:
    """The short contract summary of `--json`; the full report goes to MLflow."""
    failures = {k: {"rows": n, "examples": written.examples.get(k, [])} for k, n in written.reasons.items()}
    if not plan.contract:
        return {"rows_failed": written.rows_failed, "failures": failures} if written.rows_failed else None
    return {
        "name": plan.contract.name,
        "path": plan.contract.path,
        "sha256": plan.contract.sha256,
        "on_failure": plan.job.spec.contract.on_failure,
        "expectations": len(plan.contract.expectations),
        "rows_failed": written.rows_failed,
        "failures": failures,
    }


def _record_contract(plan: Plan, written: WrittenFiles, run_id: str, rows_checked: int) -> None:
    import mlflow

    from jobs import reports

    if not plan.contract:
        return
    report = reports.contract_report(
        plan.contract, rows_checked, dict(written.reasons), written.examples, written.rows_failed,
        job=plan.job.spec.name, run_id=run_id, partitions=",".join(plan.selection.labels),
        on_failure=plan.job.spec.contract.on_failure,
    )
    mlflow.log_dict(report, "contract/report.json")
    mlflow.log_text(reports.to_html(report), "contract/report.html")
    mlflow.log_metrics(reports.metrics(report))


def _record_plan(plan: Plan) -> None:
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    spec, selection, model = plan.job.spec, plan.selection, plan.model
    mlflow.log_params({
        "job": spec.name,
        "spec_hash": plan.job.spec_hash,
        "batch_size": spec.scoring.batch_size,
        "actors": f"{spec.scoring.actors.min}..{spec.scoring.actors.max}",
        "runtime": model.runtime,
        "precision": model.precision,
        "output_mode": spec.output.mode,
    })
    mlflow.set_tags({
        "score.job": spec.name,
        "score.table": spec.output.table,
        "score.table_uri": redact_uri(plan.table_uri),
        "score.quarantine_table_uri": redact_uri(plan.quarantine.uri) if plan.quarantine else "",
        "score.partitions": ",".join(selection.labels)[:5000],
        "score.model_uri": redact_uri(model.uri),
        "score.model_name": model.registry_name or Path(model.path).name,
        "score.model_version": model.version,
        "score.model_sha256": model.sha256,
        "score.contract": redact_uri(plan.job.project_path(plan.contract.path)) if plan.contract else "",
        "score.contract_sha256": plan.contract.sha256 if plan.contract else "",
        "score.input_fingerprint": selection.fingerprint,
        "score.code_version": code_version(),
        "score.run_key": plan.run_key,
        "score.spec_env": ",".join(plan.job.env_vars),
    })
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(redact_uri(selection.base))
    dataset = MetaDataset(source=source, name=Path(selection.base).name, digest=selection.fingerprint[:36])
    mlflow.log_input(dataset, context="scoring", tags={
        "partitions": ",".join(selection.labels)[:500],
        "files": str(len(selection.files)),
        "rows": str(selection.num_rows),
        "fingerprint": selection.fingerprint,
    })
    mlflow.log_text(plan.job.to_yaml(), "spec/resolved.yaml")  # as written: `${VAR}` kept, never its value
    mlflow.log_text(redact_uri(selection.manifest()), "input/files.json")


def _record_charts(plan: Plan, version: int) -> None:
    """The score distribution of each output column in the partitions this run wrote, over the table's version
    before the run, as PNGs in the MLflow run (`charts/`). A chart that cannot be drawn costs a warning, never
    the committed run."""
    import tempfile

    import mlflow

    from jobs.charts import score_histograms

    columns = [f.name for f in plan.binding.output_fields()]
    try:
        images = score_histograms(plan.output.uri, version, columns, list(plan.output.partition_by),
                                  [p for p in plan.output_partitions().values() if p] or None,
                                  plan.output.read_version)
        with tempfile.TemporaryDirectory(prefix="score-charts-") as folder:
            for name, image in images.items():
                Path(folder, name).write_bytes(image)
            mlflow.log_artifacts(folder, "charts")
    except Exception as exc:  # the table and its records are committed; a picture is not worth failing them
        log.warning("score histograms not recorded: %s: %s", type(exc).__name__, exc)


def _record_counts(summary: RunSummary) -> None:
    import mlflow

    mlflow.log_metrics({
        "rows_in": summary.rows_in,
        "rows_scored": summary.rows_scored,
        "rows_quarantined": summary.rows_quarantined,
        "rows_failed_contract": (summary.contract or {}).get("rows_failed", 0),
        "duration_s": summary.duration_s,
    })


def _record_result(summary: RunSummary) -> None:
    import mlflow

    _record_counts(summary)
    metrics = {"rows_per_s": summary.rows_per_s, "table_version": summary.table_version}
    if summary.freshness_lag_s is not None:
        metrics["freshness_lag_s"] = summary.freshness_lag_s
    mlflow.log_metrics(metrics)
    mlflow.set_tags({
        "score.quarantine_version": "" if summary.quarantine_version is None else str(summary.quarantine_version),
        "score.input_watermark": summary.input_watermark or "",
    })


CODE_VERSION_ENV = "SCORE_CODE_VERSION"  # set by `score submit`: the project travels without its .git


def code_version(root: str | Path | None = None) -> str:
    """The git commit of the code that ran, `-dirty` when tracked files under `root` (default: the project
    holding this package) differ from it, else the package version. Untracked files do not count: a report
    written into the project by `score validate --report` would otherwise mark every later run dirty."""
    if root is None and os.environ.get(CODE_VERSION_ENV):  # a submitted job: the submitter's checkout
        return os.environ[CODE_VERSION_ENV]
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=root,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "score-jobs " + version("score-jobs")
    except PackageNotFoundError:
        return "unknown"
