"""The OpenLineage events of one run, built from what the run already holds: its plan at START, its summary (the
`score run --json` document) at the end. `jobs.tracking.openlineage` sends them; importing this module imports the
openlineage-python client (0.4 s), so only its sender thread does.

Datasets are named as OpenLineage's naming spec says: a local path is namespace `file` and its absolute path, an
object-store URI is namespace `s3://bucket` (`gs://...`) and the key. The input is one dataset, its folder, whose
facets list the partitions and files read: one dataset per partition would make every day a node of its own in
Marquez's graph. Its version is the fingerprint of those files; a table's version is the Delta version committed.

Custom facets are named `score_*`, as the spec asks of custom facets, and are attrs classes on the client's own
facet bases. They keep their base's schema URL, as Airflow's did: no schema of ours is published.
"""

from __future__ import annotations

import datetime as dt
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

import attr
import pyarrow as pa
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    InputDatasetFacet,
    OutputDatasetFacet,
    RunFacet,
    data_quality_assertions_dataset,
    dataset_version_dataset,
    datasource_dataset,
    error_message_run,
    input_statistics_input_dataset,
    job_type_job,
    output_statistics_output_dataset,
    processing_engine_run,
    schema_dataset,
    storage_dataset,
)
from openlineage.client.uuid import generate_new_uuid

from jobs.contracts import reports
from jobs.contracts.suite import Contract, expectation_key
from jobs.errors import ContractFailure
from jobs.inputs import InputSelection, fingerprint
from jobs.models.artifacts import ModelArtifact
from jobs.spec.load import LoadedSpec
from jobs.spec.schema import OpenLineageSpec
from jobs.storage import delta_table, is_remote, redact_uri
from jobs.tables.delta import TableTarget
from jobs.tables.lineage import CommitInfo, RunRecord
from jobs.tables.profile_table import profiles_table
from jobs.tracking.code_version import code_version


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


SCORE_VERSION = _version("score-jobs") or "unknown"
PRODUCER = f"urn:score-jobs:{SCORE_VERSION}"  # the spec asks for a URI naming the producer; no URL of ours exists
DEFAULT_NAMESPACE = "score"
MAX_FILES_LISTED = 1000  # the input's partitions list their files up to this many in all, else only their counts
MAX_FAILURES_LISTED = 50  # expectations whose failed-row counts the contract facet lists


class ChallengerPlan(Protocol):
    """`model.challenger` as planned (`jobs.plan.plan.Challenger`)."""

    @property
    def model(self) -> ModelArtifact: ...
    @property
    def target(self) -> TableTarget: ...


class RunPlan(Protocol):
    """What the events need of a run's plan (`jobs.plan.plan.Plan`, a layer above this one)."""

    @property
    def job(self) -> LoadedSpec: ...
    @property
    def selection(self) -> InputSelection: ...
    @property
    def model(self) -> ModelArtifact: ...
    @property
    def contract(self) -> Contract | None: ...
    @property
    def output(self) -> TableTarget: ...
    @property
    def quarantine(self) -> TableTarget | None: ...
    @property
    def challenger(self) -> ChallengerPlan | None: ...
    @property
    def run_key(self) -> str: ...


@attr.define(kw_only=True)
class ScoreRunFacet(RunFacet):
    """The run as score and MLflow know it: run key, code, engine, counts and where its MLflow run is."""

    runKey: str
    trackingUri: str
    codeVersion: str  # the git commit (-dirty), else the package version (jobs.tracking.code_version)
    codeSha256: str | None  # the digest of the `jobs` package the run's workers ran, once the run committed
    scoreVersion: str
    rayVersion: str | None
    inputFingerprint: str
    rowsIn: int
    mlflowRunId: str | None = None
    mlflowExperimentId: str | None = None
    status: str | None = None
    engine: str | None = None  # ray, or inline (scored in the driver process)
    rowsScored: int | None = None
    rowsQuarantined: int | None = None
    rowsReused: int | None = None
    tableVersions: list[int] | None = None
    inputWatermark: str | None = None
    durationS: float | None = None
    exitCode: int | None = None


@attr.define(kw_only=True)
class ScoreModelRunFacet(RunFacet):
    """The concrete model the run scored with (a registry URI resolved to one version), and its challenger."""

    uri: str
    resolvedUri: str
    version: str
    sha256: str
    runtime: str
    precision: str
    registryName: str | None = None
    challenger: dict[str, Any] | None = None


@attr.define(kw_only=True)
class ScoreContractRunFacet(RunFacet):
    """The data contract, its policy and, once the rows are checked, its verdict: `passed` (no row failed),
    `quarantined` or `warned` (rows failed within the policy), `failed` (the run failed for them, exit 3)."""

    name: str
    path: str
    sha256: str
    expectations: int
    onFailure: str
    maxBadRows: int | None = None
    maxBadFraction: float | None = None
    verdict: str | None = None
    rowsFailed: int | None = None
    failures: dict[str, int] | None = None  # expectation(column) -> rows failed, the most failed first
    failuresOmitted: int | None = None


@attr.define(kw_only=True)
class ScorePartitionsInputFacet(InputDatasetFacet):
    """The input partitions read: rows, fingerprint and files (path under the dataset, size, rows) of each."""

    partitions: list[dict[str, Any]]


@attr.define(kw_only=True)
class ScoreTableDatasetFacet(DatasetFacet):
    """A Delta table of the warehouse: its name, the version the run's plan read and the versions it committed."""

    table: str
    readVersion: int | None = None
    versions: list[int] | None = None


class Emitter:
    """The client, and the events of the run of `plan`: one run id for all of them."""

    def __init__(self, plan: RunPlan, settings: OpenLineageSpec) -> None:
        self.plan = plan
        self.namespace = settings.namespace or os.environ.get("OPENLINEAGE_NAMESPACE") or DEFAULT_NAMESPACE
        self.run_id = str(generate_new_uuid())
        transport = _transport(settings.transport, plan.job.root) if settings.transport else None
        self.client = OpenLineageClient(config={"transport": transport} if transport else None)
        self.code_version = code_version()  # as the run's lineage record takes it; once committed, the record's own

    def emit(self, state: str, summary: dict[str, Any] | None, stack: str | None) -> None:
        self.client.emit(self.event(state, summary, stack))

    def event(self, state: str, summary: dict[str, Any] | None, stack: str | None = None) -> RunEvent:
        """The START event (no `summary`), or the run's end: COMPLETE, FAIL or ABORT, with the error and `stack`."""
        plan, spec = self.plan, self.plan.job.spec
        record = _recorded(plan.output.uri, summary.get("table_version")) if summary else None
        facets: dict[str, RunFacet] = {
            "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
                version=SCORE_VERSION, name="score", openlineageAdapterVersion=SCORE_VERSION, producer=PRODUCER
            ),
            "score_run": self._run_facet(summary, record),
            "score_model": _model_facet(plan),
        }
        if plan.contract is not None and spec.contract is not None:
            facets["score_contract"] = _contract_facet(plan, summary)
        if summary is not None and RunState[state] is not RunState.COMPLETE:
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=summary.get("error") or state, programmingLanguage="python", stackTrace=stack, producer=PRODUCER
            )
        job_type = job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="SCORE", jobType="JOB", producer=PRODUCER
        )
        return RunEvent(
            eventType=RunState[state],
            eventTime=dt.datetime.now(dt.UTC).isoformat(),
            run=Run(runId=self.run_id, facets=facets),
            job=Job(namespace=self.namespace, name=spec.name, facets={"jobType": job_type}),
            inputs=[_input(plan, summary)],
            outputs=_outputs(plan, summary or {}),
            producer=PRODUCER,
        )

    def _run_facet(self, summary: dict[str, Any] | None, record: RunRecord | None) -> ScoreRunFacet:
        plan, s = self.plan, summary or {}
        return ScoreRunFacet(
            runKey=plan.run_key,
            trackingUri=redact_uri(plan.job.spec.tracking.uri),
            codeVersion=record.code_version if record else self.code_version,
            codeSha256=record.code_sha256 if record else None,
            scoreVersion=SCORE_VERSION,
            rayVersion=_version("ray"),
            inputFingerprint=plan.selection.fingerprint,
            rowsIn=plan.selection.num_rows,
            mlflowRunId=s.get("run_id"),
            mlflowExperimentId=record.tracking.get("experiment_id") if record else None,
            status=s.get("status"),
            engine=s.get("engine"),
            rowsScored=s.get("rows_scored"),
            rowsQuarantined=s.get("rows_quarantined"),
            rowsReused=s.get("rows_reused"),
            tableVersions=s.get("table_versions"),
            inputWatermark=s.get("input_watermark"),
            durationS=s.get("duration_s"),
            exitCode=s.get("exit_code"),
            producer=PRODUCER,
        )


def _recorded(uri: str, version: int | None) -> RunRecord | None:
    """The lineage record the run's output commit carries (`jobs.tables.lineage`): read back, never derived again.
    None when the run committed nothing, or the log cannot be read now (the event goes without what it adds)."""
    if version is None:
        return None
    try:
        table = delta_table(uri)
        commit = next((c for c in table.history(table.version() - version + 1) if c["version"] == version), None)
    except Exception:  # noqa: BLE001 - the committed run stands; its event only lacks the record's code digest
        return None
    text = commit.get(CommitInfo.LINEAGE) if commit else None
    return RunRecord.from_json(text, version) if text else None


def _transport(transport: dict[str, Any], root: Path) -> dict[str, Any]:
    """The job's transport for the client: a file transport's relative path is the project's, as every path of a
    spec is."""
    path = transport.get("log_file_path")
    if transport["type"] == "file" and isinstance(path, str) and not is_remote(path) and not Path(path).is_absolute():
        return {**transport, "log_file_path": str(root / path)}
    return transport


def dataset_name(uri: str) -> tuple[str, str]:
    """(namespace, name) of a path or URI, as OpenLineage names datasets on file systems and object stores."""
    uri = redact_uri(uri).rstrip("/")
    if not is_remote(uri):
        return "file", str(Path(uri.removeprefix("file://")).absolute())
    scheme, rest = uri.split("://", 1)
    authority, _, path = rest.partition("/")
    scheme = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}.get(scheme, scheme)
    return f"{scheme}://{authority}", path


def _datasource(namespace: str) -> datasource_dataset.DatasourceDatasetFacet:
    return datasource_dataset.DatasourceDatasetFacet(name=namespace, uri=namespace, producer=PRODUCER)


def _schema(schema: pa.Schema) -> schema_dataset.SchemaDatasetFacet:
    fields = [schema_dataset.SchemaDatasetFacetFields(name=f.name, type=str(f.type), fields=None) for f in schema]
    return schema_dataset.SchemaDatasetFacet(fields=fields, producer=PRODUCER)


def _input(plan: RunPlan, summary: dict[str, Any] | None) -> InputDataset:
    """The input folder: its schema, the fingerprint of the files read as its version, their partitions and files,
    and once the rows are checked, the contract's expectations as data-quality assertions."""
    selection = plan.selection
    namespace, name = dataset_name(selection.base)
    input_facets: dict[str, InputDatasetFacet] = {
        "inputStatistics": input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
            rowCount=selection.num_rows,
            size=sum(f.size for f in selection.files),
            fileCount=len(selection.files),
            producer=PRODUCER,
        ),
        "score_partitions": ScorePartitionsInputFacet(partitions=_partitions(selection), producer=PRODUCER),
    }
    assertions = _assertions(plan, summary)
    if assertions:
        input_facets["dataQualityAssertions"] = data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
            assertions=assertions, producer=PRODUCER
        )
    facets: dict[str, DatasetFacet] = {
        "schema": _schema(selection.schema),
        "dataSource": _datasource(namespace),
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=selection.fingerprint, producer=PRODUCER
        ),
    }
    return InputDataset(namespace=namespace, name=name, facets=facets, inputFacets=input_facets)


def _partitions(selection: InputSelection) -> list[dict[str, Any]]:
    by_partition = selection.by_partition()
    listed = len(selection.files) <= MAX_FILES_LISTED
    base = selection.base.rstrip("/") + "/"
    partitions = []
    for label, files in by_partition.items():
        partition: dict[str, Any] = {
            "partition": label,
            "rows": sum(f.num_rows for f in files),
            "fingerprint": fingerprint(files),
            "fileCount": len(files),
        }
        if listed:
            partition["files"] = [
                {"path": redact_uri(f.path.removeprefix(base)), "size": f.size, "rows": f.num_rows} for f in files
            ]
        partitions.append(partition)
    return partitions


def _assertions(plan: RunPlan, summary: dict[str, Any] | None) -> list[data_quality_assertions_dataset.Assertion]:
    """One assertion per expectation of the contract (and per check the pipeline adds, such as null model inputs,
    when rows failed it), once the rows are checked. Failed-row counts only: no value of a row leaves the run."""
    s = summary or {}
    checked = s.get("contract")
    if plan.contract is None or plan.job.spec.contract is None or not checked:
        return []
    failed = {key: failure["rows"] for key, failure in checked["failures"].items()}
    report = reports.contract_report(plan.contract, s["rows_in"], failed, {}, checked["rows_failed"])
    severity = "error" if plan.job.spec.contract.on_failure == "fail" else "warn"
    return [
        data_quality_assertions_dataset.Assertion(
            assertion=entry["expectation"],
            success=entry["rows_failed"] == 0,
            column=entry["column"] or None,
            severity=severity,
            name=expectation_key(entry["expectation"], entry["column"] or None),
            expected="0",
            actual=str(entry["rows_failed"]),
            params=entry["kwargs"] or None,
        )
        for entry in report["expectations"]
    ]


def _outputs(plan: RunPlan, summary: dict[str, Any]) -> list[OutputDataset]:
    """The tables the run writes; once committed, each with its version and rows."""
    spec = plan.job.spec
    outputs = [
        _table(
            plan.output.uri,
            plan.output.schema,
            plan.output.read_version,
            summary.get("table_version"),
            summary.get("table_versions"),
            summary.get("rows_scored"),
        )
    ]
    if plan.quarantine is not None:
        version = summary.get("quarantine_version")
        target = plan.quarantine
        outputs.append(
            _table(target.uri, target.schema, target.read_version, version, None, summary.get("rows_quarantined"))
        )
    if plan.challenger is not None:
        target = plan.challenger.target
        version = (summary.get("challenger") or {}).get("version")
        outputs.append(_table(target.uri, target.schema, target.read_version, version, None, None))
    profiles = (summary.get("drift") or {}).get("profiles_version")
    if profiles is not None:
        outputs.append(_table(spec.table_uri(profiles_table(spec.output.table)), None, None, profiles, None, None))
    return outputs


def _table(
    uri: str,
    schema: pa.Schema | None,
    read_version: int | None,
    committed: int | None,
    versions: list[int] | None,
    rows: int | None,
) -> OutputDataset:
    namespace, name = dataset_name(uri)
    facets: dict[str, DatasetFacet] = {
        "storage": storage_dataset.StorageDatasetFacet(storageLayer="delta", fileFormat="parquet", producer=PRODUCER),
        "dataSource": _datasource(namespace),
        "score_table": ScoreTableDatasetFacet(
            table=uri.rstrip("/").rsplit("/", 1)[-1],
            readVersion=read_version,
            versions=versions or ([committed] if committed is not None else None),
            producer=PRODUCER,
        ),
    }
    if schema is not None:
        facets["schema"] = _schema(schema)
    output_facets: dict[str, OutputDatasetFacet] = {}
    if committed is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=str(committed), producer=PRODUCER
        )
        if rows is not None:
            output_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=rows, producer=PRODUCER
            )
    return OutputDataset(namespace=namespace, name=name, facets=facets, outputFacets=output_facets)


def _model_facet(plan: RunPlan) -> ScoreModelRunFacet:
    model = plan.model
    challenger = plan.challenger.model if plan.challenger is not None else None
    return ScoreModelRunFacet(
        uri=redact_uri(model.uri),
        resolvedUri=_resolved_uri(model.registry_name, model.version, model.path),
        version=model.version,
        sha256=model.sha256,
        runtime=model.runtime,
        precision=model.precision,
        registryName=model.registry_name,
        challenger={
            "uri": redact_uri(challenger.uri),
            "resolvedUri": _resolved_uri(challenger.registry_name, challenger.version, challenger.path),
            "version": challenger.version,
            "sha256": challenger.sha256,
        }
        if challenger is not None
        else None,
        producer=PRODUCER,
    )


def _resolved_uri(registry_name: str | None, model_version: str, path: str) -> str:
    """The concrete model as lineage records it (`jobs.plan.commits.model_record`): a registry version, or a file."""
    return redact_uri(f"models:/{registry_name}/{model_version}" if registry_name else path)


def _contract_facet(plan: RunPlan, summary: dict[str, Any] | None) -> ScoreContractRunFacet:
    contract, policy = plan.contract, plan.job.spec.contract
    assert contract is not None and policy is not None
    checked = (summary or {}).get("contract")
    verdict = failures = omitted = None
    if checked:
        failed = checked["rows_failed"]
        if (summary or {}).get("exit_code") == ContractFailure.exit_code:
            verdict = "failed"
        else:
            verdict = "passed" if not failed else {"quarantine": "quarantined"}.get(policy.on_failure, "warned")
        counts = sorted(((key, f["rows"]) for key, f in checked["failures"].items()), key=lambda kv: -kv[1])
        failures = dict(counts[:MAX_FAILURES_LISTED])
        omitted = max(len(counts) - MAX_FAILURES_LISTED, 0) or None
    return ScoreContractRunFacet(
        name=contract.name,
        path=redact_uri(plan.job.project_path(contract.path)),
        sha256=contract.sha256,
        expectations=len(contract.expectations),
        onFailure=policy.on_failure,
        maxBadRows=policy.max_bad_rows,
        maxBadFraction=policy.max_bad_fraction,
        verdict=verdict,
        rowsFailed=checked["rows_failed"] if checked else None,
        failures=failures,
        failuresOmitted=omitted,
        producer=PRODUCER,
    )
