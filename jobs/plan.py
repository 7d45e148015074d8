"""The plan: everything decided on the driver before Ray starts or any row is read.

Resolves the partitions and files, pins the model to one hashed version, loads the contract, binds the
model's inputs to the input columns and fixes the output schema. Every user mistake surfaces here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

import pyarrow as pa

from jobs.contracts import Contract, load_contract
from jobs.errors import UsageError
from jobs.inputs import UNSCORED, InputSelection, partition_label, select_input, selector_terms
from jobs.lineage import table_state
from jobs.models import ModelArtifact, ModelBinding, bind_model, resolve_model
from jobs.scoring import LINEAGE_FIELDS, REASON_TYPE, REASONS, SOURCE_FILE
from jobs.spec import JobSpec, LoadedSpec
from jobs.tables import TableTarget, check_compatible

class NothingToScore(Exception):
    """An `unscored` selection found every partition scored from its current files with this model."""


@dataclass(frozen=True)
class Plan:
    job: LoadedSpec
    selection: InputSelection
    model: ModelArtifact
    binding: ModelBinding
    contract: Contract | None
    read_columns: list[str]
    output: TableTarget
    quarantine: TableTarget | None
    drifted: dict[str, list[dict[str, str]]]  # file -> schema reasons: these files skip the pipeline
    run_key: str  # the logical run: a retry with the same key is a no-op once it committed

    @property
    def table_uri(self) -> str:
        return self.output.uri

    @property
    def clean_files(self) -> list[str]:
        return self.selection.paths(excluding=self.drifted)

    def output_partitions(self) -> dict[str, dict[str, str]]:
        """Output partition label -> its values, for every output partition this run writes."""
        cols = self.job.spec.output.partition_by
        projected = [tuple((c, dict(p)[c]) for c in cols) for p in self.selection.partitions]
        return {partition_label(p): dict(p) for p in dict.fromkeys(projected)}

    def replaced_partitions(self) -> dict[str, list[str]]:
        """For overwrite_partitions: output partition column -> the values this run scored."""
        cols = self.job.spec.output.partition_by
        return {c: sorted({values[c] for values in self.output_partitions().values()}) for c in cols}


def make_plan(job: LoadedSpec, partitions: str | list[str] | None = None, run_key: str | None = None) -> Plan:
    spec = job.spec
    model = resolve_model(spec.model, spec.tracking)
    selection = _select(spec, partitions or spec.input.partitions, model)
    where = f"input {spec.input.path} ({selection.files[0].path})"
    schema = selection.schema
    for key, column in (("input.id_column", spec.input.id_column),
                        ("input.event_time_column", spec.input.event_time_column)):
        if column and column not in schema.names:
            raise UsageError(f"{key}: column {column!r} is not in {where}; columns are {schema.names}")

    contract = load_contract(spec.contract.suite) if spec.contract else None
    binding = bind_model(model, spec.model, schema, where)

    wanted = [spec.input.id_column, spec.input.event_time_column, *binding.input_columns]
    wanted += [c for c in (contract.columns if contract else []) if c in schema.names]
    read_columns = list(dict.fromkeys(c for c in wanted if c)) + list(spec.input.partitioning)

    id_type = schema.field(spec.input.id_column).type
    fields = [pa.field(spec.input.id_column, id_type)]
    fields += [pa.field(c, pa.string()) for c in spec.input.partitioning]
    fields += binding.output_fields()
    fields += LINEAGE_FIELDS
    names = [f.name for f in fields]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise UsageError(f"model.outputs: column name(s) {clashes} clash with id, partition or lineage columns")
    partition_by = tuple(spec.output.partition_by)
    output = TableTarget(spec.table_uri(), pa.schema(fields), partition_by)
    output = replace(output, read_version=check_compatible(output))
    quarantine = None
    if spec.contract and spec.contract.on_failure == "quarantine":
        quarantine = TableTarget(spec.table_uri(quarantine_table(spec.output.table)),
                                 _quarantine_schema(schema, read_columns, spec.input.partitioning), partition_by)
        quarantine = replace(quarantine, read_version=check_compatible(quarantine))
    key = run_key or default_run_key(job, selection, model, contract)
    return Plan(job, selection, model, binding, contract, read_columns, output, quarantine,
                selection.drift(read_columns), key)


def _select(spec: JobSpec, selector: str | list[str], model: ModelArtifact | None) -> InputSelection:
    """The selected input; for `unscored`, compared with what the output table holds from `model`."""
    scored = None
    if _unscored(selector):
        scored = table_state(spec.table_uri()).scored_fingerprints(model.sha256)
    selection = select_input(spec.input.path, spec.input.partitioning, selector, scored)
    if not selection.partitions:
        raise NothingToScore(
            f"nothing to score: every selected partition under {spec.input.path} is already in "
            f"{spec.output.table}, scored from its current files with model {model.version}"
        )
    return selection


def _unscored(selector: str | list[str]) -> bool:
    return UNSCORED in selector_terms(selector)


def default_run_key(job: LoadedSpec, selection: InputSelection, model: ModelArtifact, contract: Contract | None) -> str:
    """The same work gets the same key: job, spec, the input files (fingerprint), model and contract."""
    parts = [job.spec.name, job.spec.output.table, job.spec_hash, selection.fingerprint, model.sha256,
             contract.sha256 if contract else ""]
    return f"{job.spec.name}/{hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]}"



@dataclass(frozen=True)
class ValidationPlan:
    """What `score validate` needs: the files and the contract; no model, no output."""

    job: LoadedSpec
    selection: InputSelection
    contract: Contract
    read_columns: list[str]
    drifted: dict[str, list[dict[str, str]]]

    @property
    def clean_files(self) -> list[str]:
        return self.selection.paths(excluding=self.drifted)


def make_validation_plan(job: LoadedSpec, partitions: str | list[str] | None = None) -> ValidationPlan:
    spec = job.spec
    if not spec.contract:
        raise UsageError(f"{job.file}: contract: the job has no contract to validate against")
    selector = partitions or spec.input.partitions
    model = resolve_model(spec.model, spec.tracking) if _unscored(selector) else None
    selection = _select(spec, selector, model)
    contract = load_contract(spec.contract.suite)
    wanted = [spec.input.id_column, *contract.columns]
    read_columns = [c for c in dict.fromkeys(wanted) if c in selection.schema.names] + list(spec.input.partitioning)
    return ValidationPlan(job, selection, contract, read_columns, selection.drift(read_columns))


def quarantine_table(table: str) -> str:
    return f"{table}__quarantine"


def _quarantine_schema(schema: pa.Schema, read_columns: list[str], partitioning: list[str]) -> pa.Schema:
    """The failing rows as read (original columns and types), their file, reasons, the run and when."""
    fields = [schema.field(c) for c in read_columns if c not in partitioning]
    fields += [pa.field(c, pa.string()) for c in partitioning]
    fields += [pa.field(SOURCE_FILE, pa.string()), pa.field(REASONS, REASON_TYPE), pa.field("run_id", pa.string()),
               pa.field("quarantined_at", pa.timestamp("us", tz="UTC"))]
    return pa.schema(fields)
