"""The job spec's schema: one pydantic class per section, every key with its default and its check.

What a key means is written here, once; `jobs.spec.load` reads the YAML layers into these classes.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from jobs.spec.durations import parse_duration
from jobs.storage import join_uri

TABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"  # also a folder name under the warehouse: no paths


def _duration(value: str) -> str:
    parse_duration(value)
    return value


Duration = Annotated[str, AfterValidator(_duration)]  # e.g. 26h, 90m, 2d: what `parse_duration` reads


class KeyedValueError(ValueError):
    """A check across keys, reported under the one dotted `key` to change (else it would name no key)."""

    def __init__(self, key: tuple[str, ...], reason: str) -> None:
        super().__init__(reason)
        self.key = key


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    path: str
    partitioning: list[str] = Field(default_factory=list)
    partitions: str | list[str] = "latest"
    id_column: str
    event_time_column: str | None = None
    # An event time later than the run's clock plus this fails its row (reason event_time_in_future, as the
    # contract's policy says): it is a broken clock or a placeholder (9999-12-31), and never the watermark.
    event_time_tolerance: Duration = "1h"
    # A local path that every node of a remote Ray cluster mounts (NFS, ...): without it, a local input
    # path with a remote cluster is refused, since workers read the files.
    shared: bool = False


class ContractSpec(_Strict):
    """The data contract and what to do with rows that break it. A plain string is the suite path."""

    suite: str
    on_failure: Literal["fail", "quarantine", "warn"] = "fail"
    max_bad_fraction: float | None = Field(None, ge=0, le=1)
    max_bad_rows: int | None = Field(None, ge=0)
    # Row-level expectations named here (by type, or "type(column)") fail the whole batch when any row
    # fails them; table-level expectations (row count, column set, ...) always do.
    batch_level: list[str] = Field(default_factory=list)
    engine: Literal["auto", "gx"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, value: Any) -> Any:
        return {"suite": value} if isinstance(value, str) else value

    def exceeded(self, bad: int, rows: int) -> str | None:
        """Why `bad` failing rows out of `rows` fail the run under this policy, or None."""
        if self.on_failure == "fail" and bad:
            return "on_failure is fail"
        if self.max_bad_rows is not None and bad > self.max_bad_rows:
            return f"over max_bad_rows {self.max_bad_rows}"
        if self.max_bad_fraction is not None and rows and bad / rows > self.max_bad_fraction:
            return f"{bad / rows:.2%} is over max_bad_fraction {self.max_bad_fraction:.2%}"
        return None


class TokenizerSpec(_Strict):
    """A Hugging Face `tokenizers` JSON file shipped with the model, and the text column it encodes."""

    file: str  # relative paths are looked up in the model file's folder (a registry version's artifacts)
    column: str
    max_length: int = Field(gt=0)  # every text is padded and truncated to this many tokens


class ModelSpec(_Strict):
    uri: str
    runtime: Literal["onnx", "torch"] | None = None
    # model input -> one column or several (stacked in order into a 2-D tensor). Inputs not listed are
    # built from the column of the same name.
    inputs: dict[str, str | list[str]] = Field(default_factory=dict)
    # Element types for models that do not declare them (TorchScript): model input -> numpy dtype name.
    input_dtypes: dict[str, str] = Field(default_factory=dict)
    # model output -> one column, or a list with one column per index of a 2-D output (null skips it).
    outputs: dict[str, str | list[str | None]]
    # Missing model inputs: `reject` fails the row (it is quarantined or fails the run); `pass` feeds null
    # and NaN to the model as NaN (float inputs; string inputs get ""), for models that handle them.
    null_inputs: Literal["reject", "pass"] = "reject"
    # NaN and infinite values in a float output: by default a row error (reason model_output_not_finite, which
    # scoring.on_error fails or quarantines); true keeps them as scores, for a model that means them.
    allow_nonfinite: bool = False
    # Text models: the text column becomes input_ids / attention_mask (jobs.models.text) ...
    tokenizer: TokenizerSpec | None = None
    # ... and token states [N, T, D] become one vector per row: mean over the attention mask, or the first token.
    pooling: Literal["mean", "cls"] | None = None
    # A second model (file or models:/...) with the same inputs and outputs, scoring the same batches on the same
    # actors: its scores go to `<table>__challenger` with the same keys and lineage, and the run reports how they
    # agree with this model's (overall and per monitoring.segments).
    challenger: str | None = None

    @field_validator("outputs")
    @classmethod
    def _outputs_not_empty(cls, value: dict) -> dict:
        if not value:
            raise ValueError("map at least one model output to a column")
        return value

    @property
    def resolved_runtime(self) -> Literal["onnx", "torch"]:
        if self.runtime:
            return self.runtime
        return "onnx" if self.uri.endswith(".onnx") or self.uri.startswith("models:/") else "torch"


class ActorsSpec(_Strict):
    min: int = Field(1, ge=1)
    max: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ActorsSpec:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class ScoringSpec(_Strict):
    batch_size: int = Field(65536, gt=0)
    actors: ActorsSpec = ActorsSpec()
    cpus_per_actor: float = Field(1.0, gt=0)
    gpus_per_actor: float = Field(0.0, ge=0)
    # The model runtime's threads per actor; unset: a CPU actor uses its node's cores divided among the actors
    # there (its CPU reservation only makes room for the read and write tasks), a GPU actor its cpus_per_actor.
    threads_per_actor: int | None = Field(None, gt=0)
    # Custom Ray resources each actor takes, e.g. {worker_node: 1}: actors then run only on nodes offering them.
    resources: dict[str, float] = Field(default_factory=dict)
    # How long a GPU job waits for an autoscaling cluster to add GPU nodes when none can hold an actor yet.
    gpu_wait: Duration = "0s"
    # Arithmetic the model runs in (jobs.models.precision): fp16 = torch autocast, or the ONNX model converted once to
    # float16; bf16 = torch autocast only; int8 = ONNX dynamic quantization only. Checked against the runtime
    # at plan time; inputs and outputs stay float32 either way.
    precision: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"
    # A batch the model raises on is split in halves, down to single rows, so that only the rows that make it
    # raise are singled out (an out-of-memory error just halves the batch). `fail`: the run fails naming them;
    # `quarantine`: they go to the quarantine table with the reason model_error (needs contract.on_failure
    # quarantine, which creates that table and bounds the rows a run may set aside).
    on_error: Literal["fail", "quarantine"] = "fail"
    # Re-scoring a partition with the same model (same sha256) reuses the earlier score of every row whose model
    # inputs are unchanged (the same `input_hash`, a column the table then holds): only new or changed rows go
    # to the model (jobs.stages.reuse). Needs output.mode overwrite_partitions.
    reuse: bool = False

    @field_validator("resources")
    @classmethod
    def _custom_resources(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if name in ("CPU", "GPU"):
                raise ValueError(f"{name} is set by scoring.{name.lower()}s_per_actor, not scoring.resources")
            if not amount > 0:
                raise ValueError(f"{name}: {amount:g} must be > 0")
        return value


TARGET_FILE_MB = 128  # output.target_file_mb's default, and `score optimize --target-size`'s


class OutputSpec(_Strict):
    table: str = Field(pattern=TABLE_NAME)
    partition_by: list[str] = Field(default_factory=list)
    mode: Literal["overwrite_partitions", "append"] = "overwrite_partitions"
    # Freshness limit of the table, e.g. 26h: `score freshness TABLE` uses it when --max-age is not given.
    max_age: Duration | None = None
    # Output files hold up to this many MB of scored rows (Arrow, before compression), one input partition
    # each; also `score optimize`'s default target. Larger: fewer files, more memory per write task.
    target_file_mb: float = Field(TARGET_FILE_MB, gt=0)
    # Commit every N input partitions as its own version (same run id and run key): a run that dies late,
    # re-run with its run key, redoes only the groups not committed. None: one commit for the whole run.
    commit_every: int | None = Field(None, ge=1)


class MonitoringSpec(_Strict):
    """Drift of the model's inputs and outputs (jobs.monitoring): every run profiles the rows it scores, per input
    partition, into `<table>__profiles`, and compares them with a baseline's profiles before it commits."""

    drift: bool = True
    # previous: the profiles of the last run in the table's history before this one (what it replaces or follows);
    # `version N`: those of this table's version N; `TABLE@N`: those of version N of another table of the warehouse.
    baseline: str = "previous"
    # warn: drifted columns are reported (console, --json, MLflow) and the run commits; fail: the run commits
    # nothing and exits 5 (DriftFailure).
    on_drift: Literal["warn", "fail"] = "warn"
    # A column drifts when its statistic (normed Wasserstein for numbers, Jensen-Shannon for categories) reaches
    # its threshold: `threshold` for every column, `thresholds` per column.
    threshold: float = Field(0.1, gt=0)
    thresholds: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    # Input columns whose values split the challenger's agreement figures (model.challenger), e.g. [region].
    segments: list[str] = Field(default_factory=list)

    @field_validator("baseline")
    @classmethod
    def _baseline(cls, value: str) -> str:
        baseline_of(value)
        return value

    def threshold_of(self, column: str) -> float:
        return self.thresholds.get(column, self.threshold)


class CostSpec(_Strict):
    """Prices per hour of one CPU and one GPU: with them a run reports what its work cost (jobs.commands.cost)."""

    cpu_hour: float | None = Field(None, ge=0)
    gpu_hour: float | None = Field(None, ge=0)
    currency: str = "USD"


def baseline_of(value: str) -> tuple[str | None, int | None]:
    """`monitoring.baseline` as (table, version): (None, None) for previous, (None, N) for `version N`, (TABLE, N)
    for `TABLE@N`."""
    text = value.strip()
    if text == "previous":
        return None, None
    words = text.split()
    if len(words) == 2 and words[0] == "version" and words[1].isdigit():
        return None, int(words[1])
    table, _, version = text.partition("@")
    if version.isdigit() and re.fullmatch(TABLE_NAME, table):
        return table, int(version)
    raise ValueError(f"{value!r} is not previous, `version N` or `TABLE@N` (a table of the warehouse at version N)")


class EngineSpec(_Strict):
    ray_address: str | None = None
    # `score run`'s progress: auto (a line redrawn in place on a terminal; a timestamped line every
    # `progress_every` in a log), on (redrawn even when not a terminal), off (none). Ray Data's own operator
    # bars appear only with `score -v`, on a terminal.
    progress_bars: Literal["auto", "on", "off"] = "auto"
    progress_every: Duration = "30s"
    # On a remote cluster: ship this project's code to the workers (a Ray runtime environment), or, when
    # false, use what the nodes have installed and refuse to run if it differs from the driver's code.
    ship_code: bool = True
    # On a remote cluster: forward this driver's AWS_*, MLFLOW_*, SCORE_* (GOOGLE_*, AZURE_*) settings to the
    # workers; false when the nodes have their own (instance roles, IRSA, their environment).
    forward_env: bool = True
    # Runs of at most this many rows on a local engine (no cluster, no GPUs) score in the driver process without
    # starting Ray: the same stages, files, table and lineage, minus the ~10 s Ray and its workers take to start.
    # 0: always start Ray. `measured`: the crossover `score bench` last measured for this job on this machine
    # (jobs.engines.inline.inline_limit), else 200,000.
    inline_max_rows: Annotated[int, Field(ge=0)] | Literal["measured"] = "measured"
    # The check stage reads and checks input partitions in pieces of runs of row groups adding up to at most this
    # many bytes (uncompressed; a bigger row group is a piece of its own): a worker holds one piece, never a whole
    # partition, and a big partition is checked on as many CPUs as the cluster has. 0: one piece per partition.
    piece_bytes: int = Field(64 * 2**20, ge=0)
    # A Ray run whose check, scoring and write stages all finish no rows for this long fails, naming the stage
    # that stopped (jobs.engines.progress); 0 turns the watchdog off.
    stall_timeout: Duration | Literal["0", 0] = "30m"

    @property
    def progress_every_s(self) -> float:
        return max(parse_duration(self.progress_every).total_seconds(), 1.0)

    @property
    def stall_timeout_s(self) -> float:
        return 0.0 if str(self.stall_timeout) == "0" else parse_duration(str(self.stall_timeout)).total_seconds()

    @property
    def address(self) -> str | None:
        """The Ray cluster to join (`ray_address`, else `RAY_ADDRESS`); None starts a local Ray."""
        address = self.ray_address or os.environ.get("RAY_ADDRESS") or None
        return None if address in (None, "local") else address


class OpenLineageSpec(_Strict):
    """OpenLineage run events (jobs.tracking.openlineage): START, then COMPLETE, FAIL or ABORT, sent through the
    openlineage-python client. Where they go is the client's own configuration (OPENLINEAGE_URL, OPENLINEAGE_CONFIG
    or openlineage.yml, OPENLINEAGE__TRANSPORT__*) unless `transport` names one here; with neither, nothing is sent."""

    enabled: bool = True
    # The jobs' namespace; None: $OPENLINEAGE_NAMESPACE (the one Airflow's integration uses too), else `score`.
    namespace: str | None = None
    # The client's `transport` section, as openlineage.yml would hold it: {type: http, url: ..., auth: ...},
    # {type: file, log_file_path: ...} (relative to the project root), {type: console}, {type: kafka, ...}.
    transport: dict[str, Any] | None = None

    @field_validator("transport")
    @classmethod
    def _typed(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not isinstance(value.get("type"), str):
            raise ValueError(
                "name the transport's type (http, file, console, kafka, ...): the client ignores one without"
            )
        return value


class LineageSpec(_Strict):
    """Lineage sent out through standards, beside the table's own history and MLflow."""

    openlineage: OpenLineageSpec = OpenLineageSpec()


class TrackingSpec(_Strict):
    uri: str
    experiment: str = "scoring"
    artifact_location: str


class WarehouseSpec(_Strict):
    uri: str
    # A local folder that every node of a remote Ray cluster mounts at the same path (NFS, ...): workers
    # write the output files there. Without it, a local warehouse with a remote cluster is refused.
    shared: bool = False


class JobSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    input: InputSpec
    contract: ContractSpec | None = None
    model: ModelSpec
    scoring: ScoringSpec = ScoringSpec()
    output: OutputSpec
    monitoring: MonitoringSpec = MonitoringSpec()
    cost: CostSpec = CostSpec()
    engine: EngineSpec = EngineSpec()
    tracking: TrackingSpec
    warehouse: WarehouseSpec
    # Where lineage is sent does not change what a run computes: it is left out of the spec hash (so of the run key),
    # and a transport's substituted credentials with it.
    lineage: LineageSpec = Field(LineageSpec(), exclude=True)

    @model_validator(mode="after")
    def _partition_by_is_input_partitioning(self) -> JobSpec:
        unknown = [c for c in self.output.partition_by if c not in self.input.partitioning]
        if unknown:
            raise KeyedValueError(
                ("output", "partition_by"),
                f"{unknown} must be among input.partitioning {self.input.partitioning}",
            )
        if self.output.mode == "overwrite_partitions" and not self.output.partition_by:
            raise KeyedValueError(
                ("output", "partition_by"),
                "output.mode overwrite_partitions needs output.partition_by (else it would replace the whole "
                "table): set partition_by, or use mode append",
            )
        if self.output.commit_every and self.output.mode != "overwrite_partitions":
            raise KeyedValueError(
                ("output", "commit_every"),
                "needs output.mode overwrite_partitions: a re-run of an appending job could not tell which of its "
                "groups' rows to keep; an append commits in one version (drop commit_every)",
            )
        if self.scoring.reuse and self.output.mode != "overwrite_partitions":
            raise KeyedValueError(
                ("scoring", "reuse"),
                "needs output.mode overwrite_partitions: reused scores come from the rows a re-run replaces",
            )
        if self.scoring.reuse and self.model.tokenizer:
            raise KeyedValueError(
                ("scoring", "reuse"), "does not support text models (model.tokenizer) yet: drop one of them"
            )
        if self.scoring.reuse and self.model.challenger:
            raise KeyedValueError(
                ("scoring", "reuse"),
                "cannot go with model.challenger: the challenger would see only the changed rows; drop one of them",
            )
        if self.scoring.on_error == "quarantine" and self.on_failure != "quarantine":
            policy = (
                f"contract.on_failure is {self.contract.on_failure}" if self.contract else "the job has no contract"
            )
            fix = (
                "set contract.on_failure: quarantine" if self.contract else "add a contract with on_failure: quarantine"
            )
            raise KeyedValueError(
                ("scoring", "on_error"),
                f"quarantine needs contract.on_failure: quarantine ({policy}): the rows the model raises on go to the "
                "quarantine table that policy creates, where its max_bad_rows / max_bad_fraction bound them together "
                f"with the rows that break the contract; {fix}, or use on_error: fail",
            )
        return self

    def table_uri(self, table: str | None = None) -> str:
        return join_uri(self.warehouse.uri, table or self.output.table)

    @property
    def on_failure(self) -> str:
        """What failing rows do: the contract's policy; without a contract, a failing row (a null model
        input, a drifted file) fails the run."""
        return self.contract.on_failure if self.contract else "fail"
