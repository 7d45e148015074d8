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
from jobs.tracking.orphans import driver_tags
from jobs.tracking.tags import Tag

log = logging.getLogger(__name__)


@contextmanager
def mlflow_run(name: str, read_versions: dict[str, int | None], driver_pid: int) -> Iterator[tuple[str, str]]:
    """The run's MLflow run, tagged with its driver (the process running it, `driver_pid`: the sidecar's
    parent, `jobs.tracking.recorder`) and the table versions its plan read (`jobs.tracking.orphans` finds it by
    them if the driver is killed); yields its run id and experiment id."""
    with mlflow.start_run(run_name=name) as run:
        mlflow.set_tags(driver_tags(read_versions, driver_pid))
        yield run.info.run_id, run.info.experiment_id


def record_plan(
    job: LoadedSpec,
    selection: InputSelection,
    model: ModelArtifact,
    contract: Contract | None,
    output: TableTarget,
    quarantine: TableTarget | None,
    run_key: str,
) -> None:
    """What the plan decided: the job's settings, the input (as an MLflow dataset), model, contract, tables."""
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


def record_engine(params: dict[str, Any], code_sha256: str) -> None:
    """Where the run scores (`{"engine": "inline"}`, or the Ray actor pool's `PoolSize.params()`) and the
    digest of the code it runs."""
    mlflow.log_params(params)
    mlflow.set_tag(Tag.CODE_SHA256, code_sha256)


def record_contract(report: dict[str, Any]) -> None:
    """The contract report of every row checked so far (`jobs.contracts.reports`): JSON, HTML and metrics."""
    mlflow.log_dict(report, "contract/report.json")
    mlflow.log_text(reports.to_html(report), "contract/report.html")
    mlflow.log_metrics(reports.metrics(report))


def record_drift(drift: dict[str, Any], baseline: dict[str, ColumnProfile], current: dict[str, ColumnProfile]) -> None:
    """The drift of the rows scored so far against the baseline (`RunSummary.drift`): a metric per column
    (`drift/<column>`, its statistic), the count drifted, the HTML report and a PNG of the most drifted columns."""
    mlflow.log_dict(drift, "drift/drift.json")
    if drift["baseline"]["version"] is None:
        return
    metrics = {f"drift/{c['column']}": c["statistic"] for c in drift["columns"] if c["statistic"] is not None}
    mlflow.log_metrics({**metrics, "drift_columns_drifted": len(drift["drifted"])})
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
    mlflow.log_metrics(
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
    mlflow.log_metrics(metrics)
    if interrupted:
        mlflow.end_run("KILLED")


def record_result(metrics: dict[str, float], quarantine_version: int | None, input_watermark: str | None) -> None:
    """A finished run's counts, throughput and freshness."""
    mlflow.log_metrics(metrics)
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
