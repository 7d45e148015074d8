"""One scoring run, top to bottom: spec -> plan -> track -> execute -> check -> commit -> record.

This is the only place the stages meet; each step is one call into the layer that owns it. `run_job` is what
the CLI, notebooks and tests call.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections import Counter
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from jobs.columns import REUSED
from jobs.commands.console import Console, Counts, describe_model, describe_selection, notebook_console, versions_text
from jobs.commands.cost import run_cost
from jobs.commands.locks import job_lock
from jobs.commands.summary import RunSummary
from jobs.contracts import reports
from jobs.engines.endpoints import check_job
from jobs.engines.execute import execute
from jobs.engines.inline import InlineStages, inline_reason, runs_inline
from jobs.errors import (
    EXIT_INTERRUPTED,
    ContractFailure,
    DriftFailure,
    RetryableFailure,
    RuntimeFailure,
    ScoreError,
    one_line,
)
from jobs.faults import inject
from jobs.inputs import await_partitions
from jobs.monitoring.agreement import agreement_figures
from jobs.monitoring.drift import ColumnDrift
from jobs.monitoring.profiles import across_partitions
from jobs.plan.baseline import Baseline, load_baseline, measure_drift
from jobs.plan.commits import commit_group, model_record, run_record
from jobs.plan.plan import NothingToScore, Plan, Progress, make_plan, progress_of
from jobs.plan.samples import sample_job
from jobs.spec.load import LoadedSpec, load_spec
from jobs.stages.sink import WrittenFiles
from jobs.storage import redact_uri
from jobs.tables.delta import challenger_table, current_version, discard_run_files
from jobs.tables.lineage import parse_time
from jobs.tables.profile_table import profiles_table, store_profiles
from jobs.tracking.code_version import package_digest
from jobs.tracking.names import run_name
from jobs.tracking.openlineage import RunEvents
from jobs.tracking.recorder import Recorder, recorder

log = logging.getLogger(__name__)


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
    wait_for_partitions: dt.timedelta | None = None,
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
    start while another run of the job holds its lock on this host (RetryableFailure; `jobs.commands.locks`).
    `wait_for_partitions` waits that long for selected partitions that have not landed yet (late data), then
    raises RetryableFailure instead of the UsageError a missing partition is without it.
    """
    started = time.monotonic()
    console = console if console is not None else notebook_console()
    loaded = job if isinstance(job, LoadedSpec) else load_spec(job, overrides)
    spec = loaded.spec
    if lock:
        try:
            with job_lock(loaded.root, spec.name):
                return run_job(
                    loaded, partitions, overrides, run_key, force, console, limit, table, False, wait_for_partitions
                )
        except RetryableFailure as exc:  # the lock refused: its summary names the job, as every run's does
            if getattr(exc, "summary", None) is None:
                exc.summary = RunSummary(status="failed", job=spec.name, table=spec.output.table)  # type: ignore[attr-defined]
            raise
    with recorder() as recording:  # the `score` command's sidecar, which imported MLflow meanwhile, or this process
        return _run(loaded, partitions, run_key, force, console, limit, table, started, recording, wait_for_partitions)


def _run(
    loaded: LoadedSpec,
    partitions: str | list[str] | None,
    run_key: str | None,
    force: bool,
    console: Console | None,
    limit: int | None,
    table: str | None,
    started: float,
    recording: Recorder,
    wait_for_partitions: dt.timedelta | None = None,
) -> RunSummary:
    """`run_job`'s body: plan, then `_score` what is not committed yet."""
    spec = loaded.spec
    if console is not None:
        console.follow(spec.engine)
    say = console.say if console is not None else log.info
    sample = f"a sample of {limit:,} rows of " if limit is not None else ""
    say(
        f"{spec.name}: selecting {sample}{partitions or spec.input.partitions} of {redact_uri(spec.input.path)}, "
        f"model {redact_uri(spec.model.uri)}"
    )
    if limit is not None:
        loaded, partitions = sample_job(loaded, limit, table, partitions), None
        spec = loaded.spec
    summary = RunSummary(
        status="failed",
        job=spec.name,
        table=spec.output.table,
        table_uri=redact_uri(spec.table_uri()),
        tracking_uri=redact_uri(spec.tracking.uri),
    )
    # OpenLineage: START once planned, then COMPLETE, FAIL or ABORT; nothing at all unless a transport is configured
    lineage = RunEvents(console.say if console is not None else None)
    try:
        if wait_for_partitions is not None:  # late data: wait before anything else is resolved or opened
            selector = partitions or spec.input.partitions
            waited = await_partitions(
                spec.input.path,
                spec.input.partitioning,
                selector,
                wait_for_partitions.total_seconds(),
                lambda line: say(f"{spec.name}: {line}"),
            )
            if waited >= 1:
                say(f"{spec.name}: {selector} landed after {waited:.0f}s")
        try:
            with summary.timed("plan"):
                check_job(spec)  # a server that is down fails the run now, not after minutes of retries
                plan = make_plan(loaded, partitions, run_key)
                done = Progress([], [], plan.selection.labels) if force else progress_of(plan)
        except NothingToScore as nothing:
            summary.status, summary.message = "up_to_date", str(nothing)
            summary.model_uri, summary.model_version = redact_uri(nothing.model.uri), nothing.model.version
            summary.model_sha256, summary.table_version = nothing.model.sha256, nothing.table_version
            return summary
        summary.run_key, summary.model_uri = plan.run_key, redact_uri(plan.model.uri)
        summary.model_version, summary.model_sha256 = plan.model.version, plan.model.sha256
        summary.partitions, summary.rows_in = plan.selection.labels, plan.selection.num_rows
        summary.input_fingerprint = plan.selection.fingerprint
        by = (
            f"{spec.output.table} {versions_text(r.table_version for r in done.commits)} by run "
            f"{', '.join(dict.fromkeys(r.run_id for r in done.commits))}"
        )
        if not done.todo:
            summary.status, summary.run_id = "already_committed", done.commits[0].run_id
            summary.table_version = done.commits[0].table_version
            summary.table_versions = sorted(run.table_version for run in done.commits)
            summary.message = f"run key {plan.run_key} already committed as {by}; nothing written"
            return summary
        if done.committed:
            summary.message = (
                f"resumed run key {plan.run_key}: {len(done.committed)} of its partitions were "
                f"committed as {by}; scoring the other {len(done.todo)}"
            )
            say(f"{spec.name}: {summary.message}")
            plan = plan.restricted(done.todo)
            summary.partitions, summary.rows_in = plan.selection.labels, plan.selection.num_rows
        say(
            f"{spec.name}: {describe_selection(plan.selection)}; model {describe_model(plan.model)}; "
            f"run key {plan.run_key}"
        )
        for warning in plan.warnings():
            say(f"{spec.name}: warning: {warning}")
        lineage.start(plan)
        _score(plan, summary, started, console, recording)
        lineage.end(summary)
    except (Exception, KeyboardInterrupt) as exc:  # every failure carries its summary: `--json` prints it
        summary.exit_code = (
            exc.exit_code
            if isinstance(exc, ScoreError)
            else (EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else 1)
        )
        summary.error = str(exc) if isinstance(exc, ScoreError) else f"{type(exc).__name__}: {exc}"
        summary.duration_s = round(time.monotonic() - started, 3)
        exc.summary = summary  # type: ignore[union-attr]  # any exception leaving a run carries its summary
        lineage.end(summary, exc)
        raise
    return summary


def _score(plan: Plan, summary: RunSummary, started: float, console: Console | None, recording: Recorder) -> None:
    """Track, execute, check, commit and record the run of `plan`, one group of partitions at a time."""
    spec = plan.job.spec
    say = console.say if console is not None else log.info
    inline = runs_inline(spec, plan.selection.num_rows)
    summary.engine = "inline" if inline else "ray"
    say(
        f"{spec.name}: scoring in this process ({inline_reason(spec)})"
        if inline
        else f"{spec.name}: starting Ray" + (f" on {spec.engine.address}" if spec.engine.address else "")
    )
    ray_started = None
    if not inline:
        # Ray takes 0.9 s to import (with Ray Data): a run scored inline never imports it. A run that finds its
        # work done (already committed, up to date) never starts it.
        from jobs.engines import cluster

        ray_started = cluster.start_soon(spec.engine, spec.scoring)  # while MLflow loads, opens its run, records
    # MLflow takes 1.9 s to import and connect (a run with nothing to score never does): in the sidecar or a thread,
    # while Ray starts, or while the inline engine checks and scores the first group (its rows wait for the run id).
    recording.connect_soon(spec.tracking)
    groups = plan.groups()  # one, unless output.commit_every: each group is one commit
    early = InlineStages(groups[0], _progress(console, plan, 0, 0)) if inline else None
    try:
        baseline = None
        if spec.monitoring.drift:
            with summary.timed("plan"):
                baseline = load_baseline(plan)
        _track_and_score(plan, groups, early, ray_started, baseline, recording, summary, started, console)
    finally:
        if early is not None:
            early.close()


def _progress(console: Console | None, plan: Plan, rows_checked: int, rows_quarantined: int) -> Any:
    """The console's row counter for the next group, from the counts of the groups before it."""
    return (
        None if console is None else console.counting(Counts(rows_checked, rows_quarantined), plan.selection.num_rows)
    )


def _track_and_score(
    plan: Plan,
    groups: list[Plan],
    early: InlineStages | None,
    ray_started: Future[Any] | None,
    baseline: Baseline | None,
    recording: Recorder,
    summary: RunSummary,
    started: float,
    console: Console | None,
) -> None:
    """Open the MLflow run and record the plan, then execute, check, commit and record each group: inline (the
    first group's stages `early`, already started) or on Ray (`ray_started`). With a `baseline` (monitoring.drift),
    each group's drift is measured before it commits, and its profiles stored after."""
    spec = plan.job.spec
    say = console.say if console is not None else log.info
    with summary.timed("track"):
        for dead in recording.connected():  # earlier runs whose driver was killed: marked failed, files deleted
            say(f"earlier run {dead.run_id} ({dead.job}): {dead.why}")
    read_versions = {redact_uri(t.uri): t.read_version for t in (plan.output, plan.quarantine) if t is not None}
    opened = time.monotonic()
    name = run_name(plan.job, plan.selection)
    with recording.run(name, read_versions, os.getpid()) as (run_id, experiment_id):
        summary.run_id = run_id
        try:
            with summary.timed("track"):
                summary.seconds["track"] += time.monotonic() - opened  # and the MLflow run's start
                recording.record(
                    "plan",
                    plan.job,
                    plan.selection,
                    plan.model,
                    plan.contract,
                    plan.output,
                    plan.quarantine,
                    plan.run_key,
                )
            if ray_started is None:
                pool, code_sha256 = None, package_digest()
                recording.record("engine", {"engine": "inline"}, code_sha256)
            else:
                with summary.timed("start"):
                    pool, code_sha256 = ray_started.result()
                recording.record("engine", pool.params(), code_sha256)
            checked, rows_checked, marks, devices = WrittenFiles(), 0, [], Counter[str]()  # checked: every group so far
            for n, group in enumerate(groups):
                with summary.timed("pipeline"):
                    if n == 0 and early is not None:
                        written = execute(group, run_id, None, started=early)
                    else:
                        progress = _progress(console, plan, rows_checked, checked.rows_quarantined)
                        written = execute(group, run_id, pool, progress)
                checked.merge(written)
                summary.busy_seconds = {stage: round(spent, 3) for stage, spent in checked.seconds.items()}
                rows_checked += group.selection.num_rows
                summary.cost = run_cost(spec, summary.busy_seconds, rows_checked)
                summary.contract = _contract_summary(plan, checked)
                if plan.contract and spec.contract:
                    with summary.timed("record"):
                        recording.record(
                            "contract",
                            reports.contract_report(
                                plan.contract,
                                rows_checked,
                                dict(checked.reasons),
                                checked.examples,
                                checked.rows_failed,
                                by_partition=reports.partition_counts(
                                    {
                                        label: sum(f.num_rows for f in files)
                                        for done in groups[: n + 1]
                                        for label, files in done.selection.by_partition().items()
                                    },
                                    checked.rows_failed_by_partition,
                                    checked.reasons_by_partition,
                                ),
                                job=spec.name,
                                run_id=run_id,
                                partitions=",".join(plan.selection.labels),
                                on_failure=spec.contract.on_failure,
                            ),
                        )
                _check_counts(group, written)
                _check_contract(group, checked, rows_checked, summary)
                monitoring = None
                if baseline is not None:
                    with summary.timed("monitor"):
                        current = across_partitions(checked.profiles)
                        drift = measure_drift(group, baseline, current)
                        summary.drift = _drift_summary(baseline, drift)
                        monitoring = {"baseline": baseline.to_dict(), "drift": summary.drift["columns"]}
                    with summary.timed("record"):
                        recording.record_soon("drift", summary.drift, baseline.profiles, current)
                    _check_drift(group, drift, baseline, summary)
                if plan.challenger is not None:
                    summary.challenger = _challenger_summary(plan, checked, summary.challenger)
                    with summary.timed("record"):
                        recording.record("challenger", summary.challenger)
                scored_at = dt.datetime.now(dt.UTC)
                with summary.timed("commit"):
                    cost = run_cost(spec, written.seconds, group.selection.num_rows)
                    challenger = _challenger_summary(plan, written, None) if plan.challenger is not None else None
                    record = run_record(
                        group,
                        written,
                        run_id,
                        experiment_id,
                        scored_at,
                        code_sha256,
                        summary.engine,
                        monitoring,
                        cost,
                        challenger,
                    )
                    marks += [r.watermark for r in record.outputs if r.watermark]
                    inject("commit")
                    summary.table_version, summary.quarantine_version = commit_group(group, written, record)
                if summary.challenger is not None:
                    summary.challenger["version"] = current_version(plan.challenger.target.uri)
                if baseline is not None:
                    with summary.timed("monitor"):
                        _store_profiles(group, written, run_id, summary)
                summary.table_versions.append(summary.table_version)
                summary.rows_scored += written.rows_scored  # the summary counts committed rows only
                summary.rows_quarantined += written.rows_quarantined
                devices.update(written.devices)
                summary.devices = dict(devices)
                summary.rows_reused = devices.get(REUSED, 0)
                with summary.timed("record"):
                    recording.record("commit", summary.table_versions)
                inject("committed")
                if len(groups) > 1:
                    say(
                        f"{spec.name}: committed {spec.output.table} v{summary.table_version} "
                        f"({', '.join(group.selection.labels)})"
                    )
            with summary.timed("record"):
                recording.record("devices", summary.devices)
            summary.input_watermark = max(marks, key=parse_time) if marks else None
            if summary.input_watermark:
                summary.freshness_lag_s = round((scored_at - parse_time(summary.input_watermark)).total_seconds(), 3)
        except (Exception, KeyboardInterrupt) as exc:
            if console is not None:
                console.done()
            left = _discard_files(plan, run_id)
            if left and isinstance(exc, ScoreError):  # the first error stays the one reported; this comes after
                exc.args = (f"{exc}; {left}",)
            elif left:
                exc.add_note(left)
            summary.duration_s = round(time.monotonic() - started, 3)
            recording.record(
                "failure", str(exc), type(exc).__name__, isinstance(exc, KeyboardInterrupt), summary.metrics()
            )
            raise
        if console is not None:
            console.done()
        summary.status = "succeeded"
        summary.duration_s = round(time.monotonic() - started, 3)
        summary.rows_per_s = round(summary.rows_in / summary.duration_s, 1) if summary.duration_s else 0.0
        recording.record("result", summary.metrics(), summary.quarantine_version, summary.input_watermark)
        recording.record(
            "charts",
            plan.output,
            summary.table_version,
            [f.name for f in plan.binding.output_fields()],
            [p for p in plan.output_partitions().values() if p] or None,
        )


def _discard_files(plan: Plan, run_id: str) -> str | None:
    """Delete the files a failed run wrote (never a file a landed commit added); what could not be deleted
    (a warehouse that turned read-only), for the message."""
    failures = []
    for target in (plan.output, plan.quarantine, plan.challenger.target if plan.challenger else None):
        if target is None:
            continue
        try:
            discard_run_files(target.uri, run_id, target.read_version)
        except OSError as exc:
            failures.append(f"{redact_uri(target.uri)}: {one_line(exc)}")
    if not failures:
        return None
    return (
        f"its uncommitted files could not all be deleted ({'; '.join(failures)}): no version names them, and "
        "`score vacuum` deletes them once they are older than the table's retention"
    )


def _challenger_summary(plan: Plan, written: WrittenFiles, before: dict | None) -> dict[str, Any]:
    """The challenger, its table and how its scores agree with the champion's on `written`'s rows."""
    challenger = plan.challenger
    return {
        "model": model_record(challenger.model),
        "table": challenger_table(plan.job.spec.output.table),
        "version": (before or {}).get("version"),
        "agreement": agreement_figures(written.agreement),
    }


def _drift_summary(baseline: Baseline, drift: list[ColumnDrift]) -> dict[str, Any]:
    return {
        "baseline": baseline.to_dict(),
        "columns": [d.to_dict() for d in drift],
        "drifted": [d.column for d in drift if d.drifted],
        "profiles_version": None,
        "profiles_error": None,
    }


def _check_drift(plan: Plan, drift: list[ColumnDrift], baseline: Baseline, summary: RunSummary) -> None:
    """Fail the run (commit nothing more) when a column drifted under `monitoring.on_drift: fail`."""
    drifted = [d for d in drift if d.drifted]
    if not drifted or plan.job.spec.monitoring.on_drift != "fail":
        return
    shown = "; ".join(f"{d.column} {d.method} {d.statistic:.3f} >= {d.threshold:g}" for d in drifted[:5])
    more = f" and {len(drifted) - 5} more" if len(drifted) > 5 else ""
    raise DriftFailure(
        f"drift: {len(drifted)} of {len(drift)} columns drifted from {baseline.table} version {baseline.version} "
        f"({shown}{more}); {_not_committed(plan, summary)} (monitoring.on_drift: fail; `score drift "
        f"{plan.job.spec.output.table}` shows the last committed comparison, the run's MLflow run this one)"
    )


def _store_profiles(plan: Plan, written: WrittenFiles, run_id: str, summary: RunSummary) -> None:
    """Append the group's profiles under its output version. The version is committed already: a failure here
    loses the profiles (later runs compare with an older version), never the rows, and the summary says so."""
    spec = plan.job.spec
    uri = spec.table_uri(profiles_table(spec.output.table))
    try:
        version = store_profiles(uri, written.profiles, plan.profiling().roles, summary.table_version, run_id)
        summary.drift["profiles_version"] = version
    except Exception as exc:  # noqa: BLE001 - the committed version stands; its profiles are lost, and said so
        summary.drift["profiles_error"] = f"{redact_uri(uri)}: {one_line(exc)}"
        log.warning("profiles of %s version %s not stored: %s", spec.output.table, summary.table_version, exc)


def _not_committed(plan: Plan, summary: RunSummary) -> str:
    """What a group that fails before its commit leaves: nothing, or the groups committed before it."""
    if not summary.table_versions:
        return "nothing was committed"
    return (
        f"partitions {', '.join(plan.selection.labels)} were not committed; the groups committed before "
        f"them stay ({plan.job.spec.output.table} {versions_text(summary.table_versions)}), and a re-run "
        f"with run key {plan.run_key} scores only what is missing"
    )


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
    what = _not_committed(plan, summary)
    raise ContractFailure(
        f"{name}: {checked.rows_failed} of {rows_checked} rows failed, {why} ({_top_reasons(checked)}); {what}"
    )


def _check_counts(plan: Plan, written: WrittenFiles) -> None:
    """Nothing lost: every row counted in the input footers reached the writer, scored or failed."""
    rows_in = plan.selection.num_rows
    on_failure = plan.job.spec.on_failure
    unscored = {"warn": 0, "quarantine": written.rows_quarantined, "fail": written.rows_failed}[on_failure]
    if (
        written.rows_seen != rows_in
        or written.rows_scored + unscored != rows_in
        or (on_failure == "quarantine" and written.rows_quarantined != written.rows_failed)
    ):
        raise RuntimeFailure(
            f"row count mismatch: the input files hold {rows_in} rows, the pipeline saw {written.rows_seen} "
            f"({written.rows_scored} scored, {written.rows_quarantined} quarantined, {written.rows_failed} failed "
            "the contract); nothing was committed"
        )


def _top_reasons(written: WrittenFiles) -> str:
    return "; ".join(
        f"{key}: {count} rows, e.g. {', '.join(written.examples.get(key, []))}"
        for key, count in written.reasons.most_common(3)
    )


def _contract_summary(plan: Plan, written: WrittenFiles) -> dict[str, Any] | None:
    """The short contract summary of `--json`; the full report goes to MLflow."""
    failures = {k: {"rows": n, "examples": written.examples.get(k, [])} for k, n in written.reasons.items()}
    if not plan.contract or not plan.job.spec.contract:
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
