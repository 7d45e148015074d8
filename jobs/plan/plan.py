"""The plan: everything decided on the driver before Ray starts or any row is read.

Resolves the partitions and files, pins the model to one hashed version, loads the contract, binds the
model's inputs to the input columns and fixes the output schema. Every user mistake surfaces here. The plan
also builds each stage's task (`CheckTask`, `Plan.scoring_task`, `Plan.table_writer`), which the engines
schedule as they are.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa

from jobs.column_types import stored_type
from jobs.columns import INPUT_HASH, LINEAGE_FIELDS, STAGE_COLUMNS, quarantine_schema
from jobs.contracts.suite import Contract, check_arguments, check_columns, file_failures, load_contract
from jobs.errors import UsageError
from jobs.hive import PartitionValue
from jobs.inputs import UNSCORED, InputSelection, Partition, partition_label, select_input, selector_terms
from jobs.models.artifacts import (
    NUMBERS,
    ModelArtifact,
    ModelBinding,
    bind_model,
    precision_columns,
    precision_warnings,
)
from jobs.models.precision import with_precision
from jobs.models.runtimes import ModelFiles
from jobs.monitoring.profiles import Profiling
from jobs.spec.durations import parse_duration
from jobs.spec.load import LoadedSpec
from jobs.spec.schema import JobSpec
from jobs.stages.checking import CheckTask
from jobs.stages.reuse import ReuseTask
from jobs.stages.scoring import ChallengerTask, ScoringTask
from jobs.stages.sink import RowProfiles, TableWriter
from jobs.storage import is_remote, redact_uri
from jobs.tables.delta import TableTarget, challenger_table, quarantine_table, settled
from jobs.tables.lineage import RunRecord, commits_of_run_key, table_state
from jobs.tracking.registry import resolve_model


class NothingToScore(Exception):
    """An `unscored` selection found every partition scored from its current files with this model."""

    def __init__(self, message: str, model: ModelArtifact, table_version: int) -> None:
        super().__init__(message)
        self.model, self.table_version = model, table_version


@dataclass(frozen=True)
class Challenger:
    """`model.challenger`: a second model scoring the same batches, into a table of its own."""

    model: ModelArtifact
    binding: ModelBinding
    target: TableTarget


@dataclass(frozen=True)
class Plan:
    job: LoadedSpec
    selection: InputSelection
    model: ModelArtifact
    binding: ModelBinding
    contract: Contract | None
    output: TableTarget
    quarantine: TableTarget | None
    drifted: dict[str, list[dict[str, str]]]  # file -> schema reasons: these files skip the pipeline
    run_key: str  # the logical run: a retry with the same key is a no-op once it committed
    checks: CheckTask  # what the check stage reads and judges, partition by partition
    challenger: Challenger | None = None

    @property
    def table_uri(self) -> str:
        return self.output.uri

    def output_partitions(self) -> dict[str, dict[str, PartitionValue]]:
        """Output partition label -> its values, for every output partition this run writes."""
        cols = self.job.spec.output.partition_by
        projected = [tuple((c, dict(p)[c]) for c in cols) for p in self.selection.partitions]
        return {partition_label(p): dict(p) for p in dict.fromkeys(projected)}

    def replaced_partitions(self) -> list[Partition]:
        """The input partitions whose earlier rows this run's commits replace (none when appending)."""
        if self.job.spec.output.mode == "append":
            return []
        return list(self.selection.partitions)

    def restricted(self, labels: Collection[str]) -> Plan:
        """This plan over the input partitions `labels` only: one group of `output.commit_every`, or what a
        resumed run has left to score. Run key, model and the tables' read versions stay the whole run's."""
        keep, selection = set(labels), self.selection
        files = tuple(f for f in selection.files if partition_label(f.partition) in keep)
        paths = {f.path for f in files}
        return replace(
            self,
            selection=replace(
                selection, files=files, partitions=tuple(p for p in selection.partitions if partition_label(p) in keep)
            ),
            checks=replace(
                self.checks,
                partitions=tuple((p, clean) for p, clean in self.checks.partitions if partition_label(p) in keep),
            ),
            drifted={path: reasons for path, reasons in self.drifted.items() if path in paths},
        )

    def scoring_task(self, threads: int, use_gpu: bool) -> ScoringTask:
        """The scoring stage's task: what every scoring actor needs but the model's files."""
        spec = self.job.spec
        return ScoringTask(
            model_runtime=self.model.runtime,
            model_suffix=Path(self.model.path).suffix,
            model_version=self.model.version,
            binding=self.binding,
            on_failure=spec.on_failure,
            null_inputs=spec.model.null_inputs,
            allow_nonfinite=spec.model.allow_nonfinite,
            id_column=spec.input.id_column,
            partition_columns=tuple(spec.input.partitioning),
            event_time_column=spec.input.event_time_column,
            threads=threads,
            use_gpu=use_gpu,
            on_error=spec.scoring.on_error,
            sources=self.checks.partitions,
            carried=self.carried(),
            hashed=tuple(self.binding.input_columns) if spec.scoring.reuse else (),
            reuse=self.reuse_task(),
            challenger=ChallengerTask(
                self.challenger.model.runtime,
                Path(self.challenger.model.path).suffix,
                self.challenger.model.version,
                self.challenger.binding,
            )
            if self.challenger
            else None,
        )

    def reuse_task(self) -> ReuseTask | None:
        """scoring.reuse: the selected partitions whose rows in the version the plan read were scored by this model
        (same sha256), with input hashes; None when there are none."""
        if not self.job.spec.scoring.reuse or self.output.read_version is None:
            return None
        if INPUT_HASH not in self.output.schema.names:
            return None
        state = table_state(self.output.uri, self.output.read_version)
        same = frozenset(
            label
            for label in self.selection.labels
            if label in state.inputs and state.inputs[label][1].model["sha256"] == self.model.sha256
        )
        if not same:
            return None
        outputs = tuple(f.name for f in self.binding.output_fields())
        return ReuseTask(self.output.uri, self.output.read_version, same, self.job.spec.input.id_column, outputs)

    def model_files(self) -> tuple[ModelFiles, ModelFiles | None]:
        """The champion's files and the challenger's, for the scoring actors (`ScoreBatches`)."""
        return self.model.files(), self.challenger.model.files() if self.challenger else None

    def carried(self) -> tuple[str, ...]:
        """Input columns the scoring stage passes to the writer: those it profiles, and the challenger's segments."""
        spec = self.job.spec
        columns = list(self.profiling().inputs) if spec.monitoring.drift else []
        if self.challenger:
            columns += spec.monitoring.segments
        return tuple(dict.fromkeys(columns))

    def table_writer(self, run_id: str, profiled: bool = False) -> TableWriter:
        """The write stage's writer: output rows to the output table, failing rows to the quarantine table.
        `profiled`: the rows come profiled already (`row_profiles`, applied by the inline engine's scoring thread)."""
        spec = self.job.spec
        return TableWriter(
            self.output,
            self.quarantine,
            spec.on_failure,
            run_id,
            self.checks.file_schema,
            spec.output.target_file_mb,
            None if profiled else self.row_profiles(),
            (self.challenger.target, self.challenger.model.version) if self.challenger else None,
            tuple(spec.monitoring.segments),
        )

    def row_profiles(self) -> RowProfiles | None:
        """The profiling of the rows written (monitoring.drift), which then drops the carried inputs that nothing
        later reads (the challenger's segments are read by the writer)."""
        spec = self.job.spec
        if not spec.monitoring.drift:
            return None
        profiling = self.profiling()
        kept = {*self.output.schema.names, *(spec.monitoring.segments if self.challenger else ())}
        dropped = tuple(c for c in profiling.inputs if c not in kept)
        return RowProfiles(profiling, self.output.input_partitioning, spec.on_failure == "warn", dropped)

    def profiling(self) -> Profiling:
        """What the writer profiles for drift: the columns the model reads (token inputs aside: a text's tokens
        have no distribution worth comparing) and its scalar outputs (integer ones are class labels: categories),
        of every input partition."""
        inputs = [c for b in self.binding.inputs if not b.tokens for c in b.columns]
        fields = [f for f in self.binding.output_fields() if not pa.types.is_nested(f.type)]
        outputs = [f.name for f in fields]
        inputs = [c for c in dict.fromkeys(inputs) if c not in outputs]
        rows = {label: sum(f.num_rows for f in files) for label, files in self.selection.by_partition().items()}
        labels = tuple(f.name for f in fields if pa.types.is_integer(f.type) or pa.types.is_boolean(f.type))
        return Profiling.of(inputs, outputs, rows, labels)

    def warnings(self) -> list[str]:
        """What the run will do that the user may not expect, though no row fails for it."""
        columns = precision_columns(self.binding, self.selection.schema)
        largest = self.selection.largest_magnitudes(columns) if columns else {}
        return precision_warnings(self.binding, self.selection.schema, largest)

    def groups(self) -> list[Plan]:
        """The run's commits: groups of `output.commit_every` input partitions in selection order, else one."""
        labels = self.selection.labels
        every = self.job.spec.output.commit_every
        if not every or every >= len(labels):
            return [self]
        return [self.restricted(labels[i : i + every]) for i in range(0, len(labels), every)]


@dataclass(frozen=True)
class Progress:
    """How far the plan's run key got: its commits the table still holds (newest first) and, of the selected
    input partitions, those they hold and those still to score. One commit per run, or one per group of a
    run that commits every N partitions (`output.commit_every`)."""

    commits: list[RunRecord]
    committed: list[str]
    todo: list[str]


def progress_of(plan: Plan) -> Progress:
    """What the table says the plan's run key already committed (`commits_of_run_key`)."""
    commits = commits_of_run_key(plan.output.uri, plan.run_key, replaces=plan.job.spec.output.mode != "append")
    done = {rec.partition for run in commits for rec in run.inputs}
    labels = plan.selection.labels
    return Progress(
        commits, [label for label in labels if label in done], [label for label in labels if label not in done]
    )


def make_plan(job: LoadedSpec, partitions: str | list[str] | None = None, run_key: str | None = None) -> Plan:
    spec = job.spec
    selector = partitions or spec.input.partitions
    if spec.output.mode == "append" and _unscored(selector):
        raise UsageError(
            f"{job.file}: output.mode append with partitions 'unscored' would append a second copy of every "
            "partition it re-scores (new model, changed files): use mode overwrite_partitions, or name the "
            "partitions to append"
        )
    inputs = _plan_inputs(job, selector)
    selection, model, binding, contract = inputs.selection, inputs.model, inputs.binding, inputs.contract
    schema = selection.schema
    stored = pa.schema([(f.name, stored_type(f.type)) for f in schema])  # as the tables hold the input columns
    fields = [stored.field(spec.input.id_column)]
    fields += [pa.field(c, pa.string()) for c in spec.input.partitioning]
    fields += binding.output_fields()
    if spec.scoring.reuse:
        fields.append(pa.field(INPUT_HASH, pa.int64()))
    fields += LINEAGE_FIELDS
    names = [f.name for f in fields]
    clashes = sorted({n for n in names if names.count(n) > 1} | {n for n in names if n in STAGE_COLUMNS})
    if clashes:
        raise UsageError(
            f"{job.file}: model.outputs: column name(s) {clashes} are taken (the id column {spec.input.id_column!r}, "
            f"the partition columns {list(spec.input.partitioning)}, the lineage columns "
            f"{[f.name for f in LINEAGE_FIELDS]} and the stages' own {list(STAGE_COLUMNS)}): map the outputs to "
            "other names"
        )
    partition_by, partitioning = tuple(spec.output.partition_by), tuple(spec.input.partitioning)
    output = TableTarget(spec.table_uri(), pa.schema(fields), partition_by, partitioning)
    output = settled(output, pa.schema([schema.field(spec.input.id_column)]))  # the one column copied from input
    quarantine = None
    if spec.on_failure == "quarantine":
        quarantine = TableTarget(
            spec.table_uri(quarantine_table(spec.output.table)),
            quarantine_schema(stored, inputs.read_columns, spec.input.partitioning),
            partition_by,
            partitioning,
        )
        # the input columns it copies, as the run reads them
        quarantine = settled(quarantine, inputs.checks.file_schema)
    challenger = _challenger(job, binding, inputs, output) if spec.model.challenger else None
    key = run_key or default_run_key(job, selection, model, contract, challenger)
    check_shared_storage(job)
    # Last, once everything else holds: an ONNX fp16/int8 conversion is made here (once, then cached).
    model = with_precision(model, spec.scoring.precision, job.root, where=f"{job.file}: scoring.precision")
    if challenger:
        where = f"{job.file}: scoring.precision (model.challenger)"
        challenger = replace(
            challenger, model=with_precision(challenger.model, spec.scoring.precision, job.root, where)
        )
    return Plan(
        job, selection, model, binding, contract, output, quarantine, inputs.drifted, key, inputs.checks, challenger
    )


def _challenger(job: LoadedSpec, binding: ModelBinding, inputs: _Inputs, output: TableTarget) -> Challenger:
    """The challenger resolved and bound like the champion; it must give the same output columns and types."""
    spec = job.spec
    model_spec = spec.model.model_copy(update={"uri": spec.model.challenger})
    model = resolve_model(model_spec, spec.tracking)
    where = f"model.challenger {redact_uri(spec.model.challenger)} against input {spec.input.path}"
    try:
        bound = bind_model(model, model_spec, inputs.selection.schema, where)
    except UsageError as exc:  # the champion's mapping, which the challenger must also fit
        raise UsageError(f"{job.file}: model.challenger {redact_uri(spec.model.challenger)}: {exc}") from None
    if bound.output_fields() != binding.output_fields():
        raise UsageError(
            f"{job.file}: model.challenger: its outputs {[str(f) for f in bound.output_fields()]} differ from the "
            f"champion's {[str(f) for f in binding.output_fields()]}: a challenger must map to the same columns "
            "with the same types"
        )
    target = TableTarget(
        spec.table_uri(challenger_table(spec.output.table)),
        output.schema,
        output.partition_by,
        output.input_partitioning,
    )
    return Challenger(model, bound, settled(target, pa.schema([output.schema.field(spec.input.id_column)])))


@dataclass(frozen=True)
class _Inputs:
    """The input side of a plan, shared by `score run` and `score validate` so both fail the same rows."""

    selection: InputSelection
    model: ModelArtifact
    binding: ModelBinding
    contract: Contract | None
    read_columns: list[str]
    drifted: dict[str, list[dict[str, str]]]
    checks: CheckTask


def _plan_inputs(job: LoadedSpec, selector: str | list[str]) -> _Inputs:
    spec = job.spec
    model = resolve_model(spec.model, spec.tracking)
    selection = _select(spec, selector, model)
    where = f"input {spec.input.path} ({selection.files[0].path})"
    schema = selection.schema
    for key, column in (
        ("input.id_column", spec.input.id_column),
        ("input.event_time_column", spec.input.event_time_column),
    ):
        if column and column not in schema.names:
            raise UsageError(f"{key}: column {column!r} is not in {where}; columns are {schema.names}")
    event_time = spec.input.event_time_column
    event_type = schema.field(event_time).type if event_time else None
    if event_type is not None and not (pa.types.is_timestamp(event_type) or pa.types.is_date(event_type)):
        raise UsageError(
            f"input.event_time_column: column {event_time!r} is {event_type} in {where}; the "
            "freshness watermark needs a timestamp or date column"
        )

    contract = load_contract(spec.contract.suite) if spec.contract else None
    if contract:
        check_arguments(contract, schema)
        every = {name for f in selection.files for name in f.schema.names} | set(spec.input.partitioning)
        check_columns(contract, every, f"input {spec.input.path}")
    binding = bind_model(model, spec.model, schema, where)
    if spec.model.null_inputs == "pass":
        for b in binding.inputs:
            if not b.tokens and b.dtype not in ("float32", "float64", "float16", "string"):
                raise UsageError(
                    f"model.null_inputs pass: model input {b.name!r} is {b.dtype}, which cannot hold a "
                    "missing value: use null_inputs reject, or a float input"
                )

    unknown = [c for c in spec.monitoring.segments if c not in schema.names and c not in spec.input.partitioning]
    if unknown:
        raise UsageError(f"monitoring.segments: {unknown} are not columns of {where} ({', '.join(schema.names)})")
    wanted = [spec.input.id_column, spec.input.event_time_column, *binding.input_columns, *spec.monitoring.segments]
    wanted += [c for c in (contract.columns if contract else []) if c in schema.names]
    read_columns = list(dict.fromkeys(c for c in wanted if c and c not in spec.input.partitioning))
    read_columns += list(spec.input.partitioning)
    drifted = selection.drift(read_columns)

    partitions, failures, row_groups = [], {}, dict[str, tuple]()
    for partition, files in zip(selection.partitions, selection.by_partition().values()):
        clean = [f for f in files if f.path not in drifted]
        if clean:
            partitions.append((partition, tuple(f.path for f in clean)))
            row_groups.update((f.path, f.row_groups) for f in clean)
        if contract:
            failures.update(file_failures(contract, clean, sum(f.num_rows for f in clean)))
    checks = CheckTask(
        partitions=tuple(partitions),
        file_schema=pa.schema([schema.field(c) for c in read_columns if c not in spec.input.partitioning]),
        contract=contract,
        engine=spec.contract.engine if spec.contract else "auto",
        batch_level=tuple(spec.contract.batch_level) if spec.contract else (),
        file_failures=failures,
        reject_nulls=tuple(binding.input_columns) if spec.model.null_inputs == "reject" else (),
        input_types=tuple(
            dict.fromkeys(
                (c, b.dtype) for b in binding.inputs if not b.tokens and b.dtype in NUMBERS for c in b.columns
            )
        ),
        batch_size=spec.scoring.batch_size,
        with_paths=spec.on_failure == "quarantine",
        row_groups=row_groups,
        piece_bytes=spec.engine.piece_bytes,
        event_time_column=spec.input.event_time_column,
        latest_event_time=dt.datetime.now(dt.UTC) + parse_duration(spec.input.event_time_tolerance),
    )
    return _Inputs(selection, model, binding, contract, read_columns, drifted, checks)


def check_shared_storage(job: LoadedSpec, address: str | None = None, writes: bool = True) -> None:
    """Refuse local input or warehouse (when the job `writes`) paths when the job runs on a remote Ray
    cluster (`address`, default the spec's): workers read the input and write the output files, and another
    node's local disk is not this machine's. A path every node mounts (NFS) is declared with `shared: true`."""
    spec, address = job.spec, address or job.spec.engine.address
    if _this_machine(address):
        return
    paths = [("input.path", spec.input.path, spec.input.shared)]
    if writes:
        paths.append(("warehouse.uri", spec.warehouse.uri, spec.warehouse.shared))
    for key, uri, shared in paths:
        if not is_remote(uri) and not shared:
            section = key.split(".")[0]
            raise UsageError(
                f"{job.file}: {key} {uri} is a local path, but the job runs on the Ray cluster at {address}, "
                f"whose worker nodes cannot see this machine's disk: use object storage (s3://bucket/prefix"
                f"{', e.g. SCORE_WAREHOUSE' if section == 'warehouse' else ''}), or set {section}.shared: true "
                "if every node mounts this path"
            )


def _this_machine(address: str | None) -> bool:
    """Whether the run's Ray is on this machine: one the run starts, or `auto` (the one `ray start --head` started
    here), unless `RAY_ADDRESS`, which Ray's `auto` follows first, names a host that is not this one."""
    if address is None:
        return True
    if address != "auto":
        return False
    named = os.environ.get("RAY_ADDRESS", "")
    host = named.rpartition(":")[0] if named not in ("", "auto", "local") else ""
    if not host or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: another machine, as far as this check can tell
        return False


def _select(spec: JobSpec, selector: str | list[str], model: ModelArtifact | None) -> InputSelection:
    """The selected input; for `unscored`, compared with what the output table holds from `model`."""
    state = table_state(spec.table_uri()) if _unscored(selector) else None
    scored = state.scored_fingerprints(model.sha256) if state else None
    selection = select_input(spec.input.path, spec.input.partitioning, selector, scored)
    if not selection.partitions:
        raise NothingToScore(
            f"nothing to score: every selected partition under {spec.input.path} is already in "
            f"{spec.output.table} v{state.version}, scored from its current files with model {model.version}",
            model,
            state.version,
        )
    return selection


def _unscored(selector: str | list[str]) -> bool:
    return UNSCORED in selector_terms(selector)


def default_run_key(
    job: LoadedSpec,
    selection: InputSelection,
    model: ModelArtifact,
    contract: Contract | None,
    challenger: Challenger | None = None,
) -> str:
    """The same work gets the same key: job, spec, the input files (fingerprint), model, contract (and challenger)."""
    parts = [
        job.spec.name,
        job.spec.output.table,
        job.spec_hash,
        selection.fingerprint,
        model.sha256,
        contract.sha256 if contract else "",
    ]
    if challenger:
        parts.append(challenger.model.sha256)
    return f"{job.spec.name}/{hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]}"


@dataclass(frozen=True)
class ValidationPlan:
    """What `score validate` needs: the files, the contract and the model's inputs (whose nulls fail a row
    as they do in a run); no output."""

    job: LoadedSpec
    selection: InputSelection
    contract: Contract
    drifted: dict[str, list[dict[str, str]]]
    checks: CheckTask


def make_validation_plan(job: LoadedSpec, partitions: str | list[str] | None = None) -> ValidationPlan:
    spec = job.spec
    if not spec.contract:
        raise UsageError(f"{job.file}: contract: the job has no contract to validate against")
    inputs = _plan_inputs(job, partitions or spec.input.partitions)
    check_shared_storage(job, writes=False)
    return ValidationPlan(job, inputs.selection, inputs.contract, inputs.drifted, inputs.checks)
