"""What a run records in MLflow: one MLflow run per scoring run, its parameters, tags, metrics and artifacts.

Only the driver records (workers return statistics). The run's flow (`jobs.commands.run`) calls these in
order: `mlflow_run` opens the run, `record_plan` what the plan decided, `record_engine` where it runs,
`record_contract` after each group is checked, `record_commit` after each commit, then `record_result` (or
`record_failure`) and `record_charts`. The tags are `jobs.tracking.tags.Tag`'s; the table's own history says the
same in its commit info (`jobs.tables.lineage.CommitInfo`), so neither store depends on the other.

Importing this module imports MLflow (1.1 s).
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.tracking import MlflowClient
from mlflow.tracking.context import registry as context_registry
from mlflow.tracking.fluent import _get_experiment_id
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE, MLFLOW_SOURCE_NAME

from jobs.contracts import reports
from jobs.contracts.suite import Contract
from jobs.hive import PartitionValue
from jobs.inputs import InputSelection
from jobs.models.artifacts import ModelArtifact
from jobs.monitoring import report
from jobs.monitoring.profiles import ColumnProfile
from jobs.spec.load import LoadedSpec
from jobs.storage import redact_uri
from jobs.tables.charts import score_histograms
from jobs.tables.delta import TableTarget
from jobs.tables.lineage import describe
from jobs.tracking.code_version import code_version
from jobs.tracking.names import run_name, run_roles
from jobs.tracking.orphans import driver_tags
from jobs.tracking.tags import Metric, Tag

log = logging.getLogger(__name__)

# Each open run's detail metrics (one per drift column, per challenger figure), logged after its counts: MLflow's run
# page lists a run's metrics in the order they were first logged, and the counts are what a reader looks for first.
_held: dict[str, dict[str, float]] = {}


@contextmanager
def mlflow_run(
    name: str, read_versions: dict[str, int | None], driver_pid: int, began_ms: int
) -> Iterator[tuple[str, str]]:
    """The run's MLflow run, tagged with its driver (the process running it, `driver_pid`: the sidecar's
    parent, `jobs.tracking.recorder`) and the table versions its plan read (`jobs.tracking.orphans` finds it by
    them if the driver is killed); yields its run id and experiment id.

    It starts at `began_ms`, when the run began, and ends when this block exits: MLflow's own start time would be
    when the run is opened, after MLflow loaded and the plan was made (`mlflow.start_run` takes no start time, so
    the run is created here with MLflow's own default tags and then made the active one)."""
    tags = context_registry.resolve_tags({MLFLOW_RUN_NAME: name, **driver_tags(read_versions, driver_pid)})
    experiment_id = _get_experiment_id()  # what `mlflow.start_run` would use: the one `connect` set
    assert experiment_id is not None, "jobs.tracking.connect sets the experiment before a run opens"
    created = MlflowClient().create_run(experiment_id, start_time=began_ms, tags=tags, run_name=name)
    _held[created.info.run_id] = {}
    try:
        with mlflow.start_run(run_id=created.info.run_id) as run:
            yield run.info.run_id, run.info.experiment_id
    finally:
        _held.pop(created.info.run_id, None)


def record_plan(
    job: LoadedSpec,
    selection: InputSelection,
    model: ModelArtifact,
    contract: Contract | None,
    output: TableTarget,
    quarantine: TableTarget | None,
    run_key: str,
) -> None:
    """What the plan decided: the job's settings, the input (as an MLflow dataset), model, contract, tables; and
    the run's name and role (`jobs.tracking.names`), source (the job file) and a one-paragraph description."""
    spec = job.spec
    mlflow.log_params(
        {
            "job": spec.name,
            "spec_hash": job.spec_hash,
            "batch_size": spec.scoring.batch_size,
            "actors": f"{spec.scoring.actors.min}..{spec.scoring.actors.max}",
            "runtime": model.runtime,
            "precision": model.precision,
            "output_mode": spec.output.mode,
        }
    )
    mlflow.set_tags(
        {
            Tag.JOB: spec.name,
            Tag.TABLE: spec.output.table,
            Tag.TABLE_URI: redact_uri(output.uri),
            Tag.QUARANTINE_TABLE_URI: redact_uri(quarantine.uri) if quarantine else "",
            Tag.PARTITIONS: ",".join(selection.labels)[:5000],
            Tag.MODEL_URI: redact_uri(model.uri),
            Tag.MODEL_NAME: model.registry_name or Path(model.path).name,
            Tag.MODEL_VERSION: model.version,
            Tag.MODEL_SHA256: model.sha256,
            Tag.CONTRACT: redact_uri(job.project_path(contract.path)) if contract else "",
            Tag.CONTRACT_SHA256: contract.sha256 if contract else "",
            Tag.INPUT_FINGERPRINT: selection.fingerprint,
            Tag.CODE_VERSION: code_version(),
            Tag.RUN_KEY: run_key,
            Tag.SPEC_ENV: ",".join(job.env_vars),
            Tag.ROLE: ",".join(run_roles(job, selection)),
            MLFLOW_RUN_NAME: run_name(job, selection),
            MLFLOW_SOURCE_NAME: job.project_path(str(job.file)),
            MLFLOW_RUN_NOTE: _description(job, selection, model, contract),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(redact_uri(selection.base))
    # MetaDataset is concrete at run time; its base class declares `profile` abstract only to type checkers.
    dataset = MetaDataset(
        source=source,
        name=Path(selection.base).name,  # type: ignore[abstract]
        digest=selection.fingerprint[:36],
    )
    mlflow.log_input(
        dataset,
        context="scoring",
        tags={
            "partitions": ",".join(selection.labels)[:500],
            "files": str(len(selection.files)),
            "rows": str(selection.num_rows),
            "fingerprint": selection.fingerprint,
        },
    )
    mlflow.log_text(job.to_yaml(), "spec/resolved.yaml")  # as written: `${VAR}` kept, never its value
    mlflow.log_text(redact_uri(selection.manifest()), "input/files.json")


def _description(job: LoadedSpec, selection: InputSelection, model: ModelArtifact, contract: Contract | None) -> str:
    """The run in a sentence, for the top of its MLflow page (Markdown)."""
    spec = job.spec
    partitions = selection.labels
    shown = ", ".join(partitions[:3]) + (f" and {len(partitions) - 3} more" if len(partitions) > 3 else "")
    text = (
        f"Scores {selection.num_rows:,} rows of `{job.project_path(redact_uri(selection.base))}` ({shown}) with "
        f"`{job.project_path(redact_uri(model.uri))}` (version {model.version}) into table **{spec.output.table}**"
    )
    if contract and spec.contract:
        text += (
            f"; contract `{Path(contract.path).name}` ({spec.contract.on_failure}; each expectation in "
            "`contract/report.html`)"
        )
    return text + "."


def record_engine(params: dict[str, Any], code_sha256: str) -> None:
    """Where the run scores (`{"engine": "inline"}`, or the Ray actor pool's `PoolSize.params()`) and the
    digest of the code it runs."""
    mlflow.log_params(params)
    mlflow.set_tag(Tag.CODE_SHA256, code_sha256)


def record_contract(report: dict[str, Any]) -> None:
    """The contract report of every row checked so far (`jobs.contracts.reports`): JSON, HTML and its totals as
    metrics. Each expectation's count is in the report, not a metric of its own: 33 of them buried the run's
    figures in MLflow's charts."""
    mlflow.log_dict(report, "contract/report.json")
    mlflow.log_text(reports.to_html(report), "contract/report.html")
    mlflow.log_metrics(
        {
            Metric.CHECKED: report["rows_checked"],
            Metric.FAILED: report["rows_failed"],
            Metric.EXPECTATIONS_FAILED: sum(1 for e in report["expectations"] if e["rows_failed"]),
        }
    )


def record_drift(drift: dict[str, Any], baseline: dict[str, ColumnProfile], current: dict[str, ColumnProfile]) -> None:
    """The drift of the rows scored so far against the baseline (`RunSummary.drift`): a metric per column
    (`drift/<column>`, its statistic; logged after the run's counts), the count drifted, the HTML report and a PNG
    of the most drifted columns."""
    mlflow.log_dict(drift, "drift/drift.json")
    if drift["baseline"]["version"] is None:
        return
    mlflow.log_metrics({Metric.COLUMNS_DRIFTED: len(drift["drifted"])})
    _hold({f"drift/{c['column']}": c["statistic"] for c in drift["columns"] if c["statistic"] is not None})
    mlflow.log_text(report.to_html(drift, "Drift of the model's inputs and outputs"), "drift/report.html")
    try:
        image = report.most_drifted_png(drift, baseline, current)
        if image is not None:
            with tempfile.TemporaryDirectory(prefix="score-drift-") as folder:
                Path(folder, "most_drifted.png").write_bytes(image)
                mlflow.log_artifacts(folder, "drift")
    except Exception as exc:  # the numbers are recorded; a picture is not worth failing the run
        log.warning("drift chart not recorded: %s: %s", type(exc).__name__, exc)


def record_challenger(challenger: dict[str, Any]) -> None:
    """The challenger's agreement with the champion: metrics for the whole (`challenger/<column>/<figure>`), the
    figures per segment as `challenger/agreement.json`, and the challenger's version as tags."""
    mlflow.log_dict(challenger, "challenger/agreement.json")
    whole: dict[str, dict] = next(iter(challenger["agreement"].values()), {})
    _hold(
        {
            f"challenger/{column}/{name}": value
            for column, figures in whole.items()
            for name, value in figures.items()
            if value is not None
        }
    )
    mlflow.set_tags(
        {
            Tag.CHALLENGER_URI: challenger["model"]["uri"],
            Tag.CHALLENGER_VERSION: challenger["model"]["version"],
            Tag.CHALLENGER_SHA256: challenger["model"]["sha256"],
        }
    )


def record_commit(versions: list[int]) -> None:
    """The table versions the run has committed so far: its last, and all of them."""
    mlflow.set_tags({Tag.TABLE_VERSION: str(versions[-1]), Tag.TABLE_VERSIONS: ",".join(map(str, versions))})


def record_devices(devices: dict[str, int]) -> None:
    mlflow.set_tag(Tag.DEVICES, json.dumps(devices))


def record_failure(error: str, error_type: str, interrupted: bool, metrics: dict[str, float]) -> None:
    """Why the run failed (its exception's text and type name), and its counts; an interrupted run (Ctrl-C,
    SIGTERM) ends KILLED: stopped, not broken (a failed one ends FAILED when the `mlflow_run` block exits with
    the exception)."""
    mlflow.set_tags({Tag.ERROR: error[:5000], Tag.ERROR_TYPE: error_type})
    _log_counts_then_held(metrics)
    if interrupted:
        mlflow.end_run("KILLED")


def record_result(metrics: dict[str, float], quarantine_version: int | None, input_watermark: str | None) -> None:
    """A finished run's counts, throughput and freshness."""
    _log_counts_then_held(metrics)
    mlflow.set_tags(
        {
            Tag.QUARANTINE_VERSION: "" if quarantine_version is None else str(quarantine_version),
            Tag.INPUT_WATERMARK: input_watermark or "",
        }
    )


def record_charts(
    output: TableTarget, version: int, columns: list[str], partitions: list[dict[str, PartitionValue]] | None
) -> None:
    """The score distribution of each output column in the partitions this run wrote, over the table's version
    before the run, as PNGs in the MLflow run (`charts/`). A chart that cannot be drawn costs a warning, never
    the committed run."""
    try:
        images = score_histograms(
            output.uri, version, columns, list(output.partition_by), partitions, output.read_version
        )
        with tempfile.TemporaryDirectory(prefix="score-charts-") as folder:
            for name, image in images.items():
                Path(folder, name).write_bytes(image)
            mlflow.log_artifacts(folder, "charts")
    except Exception as exc:  # the table and its records are committed; a picture is not worth failing them
        log.warning("score histograms not recorded: %s: %s", type(exc).__name__, exc)


def _hold(metrics: dict[str, float]) -> None:
    """Detail metrics of the open run, logged by `_log_counts_then_held` (at once outside a `mlflow_run`)."""
    run = mlflow.active_run()
    held = _held.get(run.info.run_id) if run is not None else None
    if held is None:
        mlflow.log_metrics(metrics)
    else:
        held.update(metrics)


def _log_counts_then_held(metrics: dict[str, float]) -> None:
    """`metrics`, the headline ones (`Metric`'s, capitalised) first, then the detail held back so far."""
    run = mlflow.active_run()
    held = _held.get(run.info.run_id, {}) if run is not None else {}
    ordered = sorted(metrics.items(), key=lambda item: not item[0][:1].isupper())  # stable: headline first
    mlflow.log_metrics({**dict(ordered), **held})
    held.clear()


def describe_lineage(table_uri: str, version: int | None = None) -> dict[str, Any]:
    """`jobs.tables.lineage.describe`, with each run's MLflow run as the tracking store reports it."""
    lineage = describe(table_uri, version)
    for run in lineage["runs"]:
        run["mlflow"].update(_run_status(run["mlflow"]))
    return lineage


def _run_status(tracking: dict[str, Any]) -> dict[str, Any]:
    """What the tracking store says about the run (its status and the table version it recorded)."""
    try:
        run = MlflowClient(tracking_uri=tracking["uri"]).get_run(tracking["run_id"])
    except Exception as exc:  # the table's record stands even when the tracking store is unreachable
        return {"reachable": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    return {
        "reachable": True,
        "status": run.info.status,
        "run_name": run.info.run_name,
        "artifact_uri": run.info.artifact_uri,
        "table_version_tag": run.data.tags.get(Tag.TABLE_VERSION),
    }
