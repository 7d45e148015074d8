"""The job spec: YAML layered over `conf/defaults.yaml`, `--set` overrides and `${ENV}` references.

Everything is validated before any data is read. Every error names the file the offending key came from
(the job file, the defaults file or `--set`), the dotted key and the reason.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jobs.errors import SpecError
from jobs.storage import is_remote

SET_ORIGIN = "--set"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
TABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"  # also a folder name under the warehouse: no paths
# scheme://USERINFO@: the user info runs to the last @ before the path, query or fragment.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#\s\"]*)@")
_CONTAINER_SCHEMES = ("abfs", "abfss", "wasb", "wasbs")  # their user info names a container, not a user


class _SpecLoader(yaml.SafeLoader):
    """YAML 1.2 core-schema scalars for job files and `--set`: only true/false are booleans and only plain
    decimal numbers are numbers. PyYAML's YAML 1.1 reads `off`/`yes`/`no` as booleans, `0755` as octal, `1_000`
    as 1000 and `2026-11-27` as a date, which the schema then rejects or mis-reads."""

    yaml_implicit_resolvers: dict = {}


for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("int", r"^[-+]?(?:0|[1-9][0-9]*)$", "-+0123456789"),
    ("float", r"^[-+]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"
              r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$", "-+0123456789."),
    ("merge", r"^<<$", "<"),
):
    _SpecLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))


def _duration(value: str) -> str:
    from jobs.freshness import parse_duration

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
    # Text models: the text column becomes input_ids / attention_mask (jobs.text) ...
    tokenizer: TokenizerSpec | None = None
    # ... and token states [N, T, D] become one vector per row: mean over the attention mask, or the first token.
    pooling: Literal["mean", "cls"] | None = None

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
    def _ordered(self) -> "ActorsSpec":
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
    # Arithmetic the model runs in (jobs.precision): fp16 = torch autocast, or the ONNX model converted once to
    # float16; bf16 = torch autocast only; int8 = ONNX dynamic quantization only. Checked against the runtime
    # at plan time; inputs and outputs stay float32 either way.
    precision: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"
    # A batch the model raises on is split in halves, down to single rows, so that only the rows that make it
    # raise are singled out (an out-of-memory error just halves the batch). `fail`: the run fails naming them;
    # `quarantine`: they go to the quarantine table with the reason model_error (needs contract.on_failure
    # quarantine, which creates that table and bounds the rows a run may set aside).
    on_error: Literal["fail", "quarantine"] = "fail"

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
    # 0: always start Ray.
    inline_max_rows: int = Field(200_000, ge=0)
    # A Ray run whose check, scoring and write stages all finish no rows for this long fails, naming the stage
    # that stopped (jobs.progress); 0 turns the watchdog off.
    stall_timeout: Duration | Literal["0", 0] = "30m"

    @property
    def progress_every_s(self) -> float:
        from jobs.freshness import parse_duration

        return max(parse_duration(self.progress_every).total_seconds(), 1.0)

    @property
    def stall_timeout_s(self) -> float:
        from jobs.freshness import parse_duration

        return 0.0 if str(self.stall_timeout) == "0" else parse_duration(self.stall_timeout).total_seconds()

    @property
    def address(self) -> str | None:
        """The Ray cluster to join (`ray_address`, else `RAY_ADDRESS`); None starts a local Ray."""
        address = self.ray_address or os.environ.get("RAY_ADDRESS") or None
        return None if address in (None, "local") else address


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
    engine: EngineSpec = EngineSpec()
    tracking: TrackingSpec
    warehouse: WarehouseSpec

    @model_validator(mode="after")
    def _partition_by_is_input_partitioning(self) -> "JobSpec":
        unknown = [c for c in self.output.partition_by if c not in self.input.partitioning]
        if unknown:
            raise ValueError(
                f"output.partition_by {unknown} must be among input.partitioning {self.input.partitioning}"
            )
        if self.output.mode == "overwrite_partitions" and not self.output.partition_by:
            raise ValueError(
                "output.mode overwrite_partitions needs output.partition_by (else it would replace the whole "
                "table): set partition_by, or use mode append"
            )
        if self.output.commit_every and self.output.mode != "overwrite_partitions":
            raise KeyedValueError(
                ("output", "commit_every"),
                "needs output.mode overwrite_partitions: a re-run of an appending job could not tell which of its "
                "groups' rows to keep; an append commits in one version (drop commit_every)"
            )
        if self.scoring.on_error == "quarantine" and self.on_failure != "quarantine":
            policy = f"contract.on_failure is {self.contract.on_failure}" if self.contract else "the job has no contract"
            fix = "set contract.on_failure: quarantine" if self.contract else "add a contract with on_failure: quarantine"
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


class LoadedSpec(BaseModel):
    """A validated spec plus where it came from, so later errors can still name the file."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    spec: JobSpec
    file: Path
    defaults_file: Path | None
    root: Path
    overrides: tuple[str, ...] = ()
    # The layered spec before `${VAR}` substitution, and the names of the variables it references: what runs
    # record, since a substituted value may be a secret.
    written: dict[str, Any] = Field(default_factory=dict)
    env_vars: tuple[str, ...] = ()

    def project_path(self, path: str) -> str:
        """`path` relative to the project root when it lies inside it: what records keep, since a submitted
        job runs in a temporary copy of the project on the head node."""
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return path

    @property
    def resolved(self) -> dict[str, Any]:
        return self.spec.model_dump(mode="json")

    @property
    def spec_hash(self) -> str:
        blob = json.dumps(self.resolved, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_yaml(self) -> str:
        """The spec as written (defaults + job + --set, `${VAR}` kept, URI user info masked), headed by the
        names of the variables it references: never the substituted values, which may be secrets."""
        order = list(JobSpec.model_fields)
        doc = dict(sorted(self.written.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
        header = f"# environment variables referenced (values not recorded): {', '.join(self.env_vars) or 'none'}\n"
        return header + redact_uri(yaml.safe_dump(doc, sort_keys=False))


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def redact_uri(text: str) -> str:
    """`text` with the user info of every URI in it masked (`https://user:token@host` -> `https://***@host`,
    `postgresql://user:pw@host/db` -> `postgresql://***@host/db`): URIs are recorded and printed, and their
    user info is usually a credential. Azure's `abfss://container@account...` names a container and stays."""

    def mask(match: re.Match) -> str:
        scheme, userinfo = match.group(1), match.group(2)
        if scheme.lower() in _CONTAINER_SCHEMES and ":" not in userinfo:
            return match.group(0)
        return f"{scheme}://***@"

    return _USERINFO.sub(mask, text)


def load_spec(
    job_file: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    environ: dict[str, str] | None = None,
) -> LoadedSpec:
    """Load, layer, interpolate and validate one job spec. Raises SpecError naming file and key."""
    job_path = Path(job_file).resolve()
    if not job_path.is_file():
        raise SpecError(str(job_file), None, "job spec file not found")
    environ = dict(os.environ if environ is None else environ)
    defaults_path, root = _find_defaults(job_path)

    defaults = _read_yaml(defaults_path) if defaults_path else {}
    job = _read_yaml(job_path)
    set_doc: dict[str, Any] = {}
    for item in overrides:
        _apply_override(set_doc, item)

    origins = _Origins(job_path, defaults_path, defaults, job, set_doc)
    written = _deep_merge(_deep_merge(_shorthand(defaults), _shorthand(job)), set_doc)
    merged = _interpolate(written, environ, origins, ())

    try:
        spec = JobSpec.model_validate(merged)
    except ValidationError as exc:
        if defaults_path is None and {"tracking", "warehouse"} - set(merged):  # a job file outside any project
            raise SpecError(
                str(job_path), None,
                f"not inside a project: no conf/defaults.yaml in {job_path.parent} or a folder above it, so "
                "tracking: and warehouse: are unset; create a project with `score init DIR` and put the job in "
                "DIR/conf/jobs/, or give the job its own tracking: and warehouse: sections",
            ) from None
        raise _spec_error(exc, origins) from None

    spec = _resolve_paths(spec, root, origins)
    return LoadedSpec(spec=spec, file=job_path, defaults_file=defaults_path, root=root, overrides=tuple(overrides),
                      written=written, env_vars=_env_names(written))


class _Origins:
    """Answers "which file did this key come from" for error messages."""

    def __init__(self, job: Path, defaults: Path | None, defaults_doc: dict, job_doc: dict, set_doc: dict):
        self.job, self.defaults = job, defaults
        self.layers = [(SET_ORIGIN, set_doc), (str(job), job_doc)]
        if defaults:
            self.layers.append((str(defaults), defaults_doc))

    def of(self, key: tuple) -> str:
        return self._find(key)[0]

    def value(self, key: tuple) -> Any:
        """The raw value of `key` in the top-most layer that sets it."""
        return self._find(key)[1]

    def _find(self, key: tuple) -> tuple[str, Any]:
        for name, doc in self.layers:
            node: Any = doc
            for part in key:
                if isinstance(node, dict) and part in node:
                    node = node[part]
                elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                    node = node[part]
                else:
                    break
            else:
                return name, node
        return str(self.job), None


def load_tracking(start: str | Path = ".", environ: dict[str, str] | None = None) -> TrackingSpec:
    """The `tracking:` settings of the project around `start`, for commands that run no job."""
    tracking, root = _defaults_section("tracking", TrackingSpec, start, environ)
    return _resolve_tracking(tracking, root)


def load_warehouse(start: str | Path = ".", environ: dict[str, str] | None = None) -> str:
    """The warehouse URI of the project around `start` (absolute, for a local folder)."""
    warehouse, root = _defaults_section("warehouse", WarehouseSpec, start, environ)
    return _local_path(warehouse.uri, root)


def _defaults_section(key: str, model: type[_Strict], start: str | Path, environ: dict[str, str] | None):
    defaults_path, root = _find_defaults(Path(start).resolve() / "_")
    if defaults_path is None:
        raise SpecError(str(Path(start).resolve()), None, "no conf/defaults.yaml in this folder or above it")
    doc = _read_yaml(defaults_path)
    origins = _Origins(defaults_path, defaults_path, doc, doc, {})
    doc = _interpolate(doc, dict(os.environ if environ is None else environ), origins, ())
    try:
        return model.model_validate(doc.get(key) or {}), root
    except ValidationError as exc:
        raise SpecError(str(defaults_path), key, str(exc.errors()[0]["msg"])) from None


def _find_defaults(job_path: Path) -> tuple[Path | None, Path]:
    """`<root>/conf/defaults.yaml` above the job file; the project root is the folder holding `conf/`."""
    for folder in job_path.parents:
        candidate = folder / "conf" / "defaults.yaml"
        if candidate.is_file():
            return candidate, folder
    return None, Path.cwd()


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.load(path.read_text(), Loader=_SpecLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SpecError(str(path), None, f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except OSError as exc:
        raise SpecError(str(path), None, f"cannot read: {exc.strerror}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise SpecError(str(path), None, "must be a YAML mapping at the top level")
    return doc


def _apply_override(doc: dict, item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise SpecError(SET_ORIGIN, item, "expected key=value, e.g. --set scoring.batch_size=8192")
    try:
        value = yaml.load(raw, Loader=_SpecLoader) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = doc
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(SET_ORIGIN, key, "conflicts with another --set of the same key")
    node[parts[-1]] = value


def _shorthand(doc: dict) -> dict:
    """`contract: path` is short for `contract: {suite: path}`; expand it so later layers can add keys."""
    if isinstance(doc.get("contract"), str):
        return {**doc, "contract": {"suite": doc["contract"]}}
    return doc


def _deep_merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _interpolate(node: Any, environ: dict[str, str], origins: _Origins, key: tuple) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, environ, origins, (*key, k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, environ, origins, (*key, i)) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if environ.get(name):
            return environ[name]
        if default is not None:
            return default
        raise SpecError(origins.of(key), _dotted(key), f"references unset environment variable {name}")

    value = _ENV_REF.sub(substitute, node)
    return None if value == "" else value


def _env_names(node: Any) -> tuple[str, ...]:
    """The names of the `${VAR}` references anywhere in `node`, sorted."""
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        return tuple(sorted({name for item in node for name in _env_names(item)}))
    return tuple(sorted({m.group(1) for m in _ENV_REF.finditer(node)})) if isinstance(node, str) else ()


def _dotted(key: tuple) -> str:
    return ".".join(str(p) for p in key)


def _spec_error(exc: ValidationError, origins: _Origins) -> SpecError:
    """One SpecError for the first problem; its message lists every problem, one per line."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        keyed = (err.get("ctx") or {}).get("error")
        if isinstance(keyed, KeyedValueError):
            loc = (*loc, *keyed.key)
        if err["type"] == "extra_forbidden":
            reason = "unknown key"
        elif err["type"] == "missing":
            reason = "required key is missing"
        else:
            reason = err["msg"].removeprefix("Value error, ")
            if "input" in err and not isinstance(err["input"], dict):
                reason += f" (got {err['input']!r})"
        problems.append(SpecError(origins.of(loc), _dotted(loc) or None, reason))
    error = problems[0]
    if len(problems) > 1:
        error.args = ("\n".join(str(p) for p in problems),)
    return error


def _resolve_paths(spec: JobSpec, root: Path, origins: _Origins) -> JobSpec:
    """Make relative paths absolute against the project root and check the files that must exist."""

    def local(value: str) -> str:
        return _local_path(value, root)

    def must_exist(value: str, key: tuple, what: str) -> None:
        if not is_remote(value) and not value.startswith("models:/") and not Path(value).exists():
            raise SpecError(origins.of(key), _dotted(key), f"{what} not found: {value}")

    input_path = local(spec.input.path)
    must_exist(input_path, ("input", "path"), "input folder")
    contract = spec.contract
    if contract:
        contract = contract.model_copy(update={"suite": local(contract.suite)})
        key = ("contract",) if isinstance(origins.value(("contract",)), str) else ("contract", "suite")
        must_exist(contract.suite, key, "contract file")
    model_uri = local(spec.model.uri)
    must_exist(model_uri, ("model", "uri"), "model file")

    return spec.model_copy(
        update={
            "input": spec.input.model_copy(update={"path": input_path}),
            "contract": contract,
            "model": spec.model.model_copy(update={"uri": model_uri}),
            "tracking": _resolve_tracking(spec.tracking, root),
            "warehouse": spec.warehouse.model_copy(update={"uri": _local_path(spec.warehouse.uri, root)}),
        }
    )


def _local_path(value: str, root: Path) -> str:
    """Relative local paths become absolute under the project root; URIs and registry names stay."""
    if is_remote(value) or value.startswith("models:/"):
        return value
    path = Path(value.removeprefix("file://"))
    return str(path if path.is_absolute() else (root / path).resolve())


def _resolve_tracking(tracking: TrackingSpec, root: Path) -> TrackingSpec:
    uri = tracking.uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + _local_path(uri.removeprefix("sqlite:///"), root)
    artifacts = tracking.artifact_location
    if not is_remote(artifacts):
        artifacts = Path(_local_path(artifacts, root)).as_uri()
    return tracking.model_copy(update={"uri": uri, "artifact_location": artifacts})
