"""Loading a job spec: YAML layered over `conf/defaults.yaml`, `--set` overrides and `${ENV}` references.

Everything is validated (`jobs.spec.schema`) before any data is read. Every error names the file the offending
key came from (the job file, the defaults file or `--set`), the dotted key and the reason.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.errors import SpecError
from jobs.spec.schema import JobSpec, KeyedValueError, TrackingSpec, WarehouseSpec
from jobs.storage import is_remote, redact_uri

SET_ORIGIN = "--set"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _SpecLoader(yaml.SafeLoader):
    """YAML 1.2 core-schema scalars for job files and `--set`: only true/false are booleans and only plain
    decimal numbers are numbers. PyYAML's YAML 1.1 reads `off`/`yes`/`no` as booleans, `0755` as octal, `1_000`
    as 1000 and `2026-11-27` as a date, which the schema then rejects or mis-reads."""

    yaml_implicit_resolvers: dict = {}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """A key written twice in one mapping is refused, naming both lines: PyYAML keeps the last silently."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is written twice (first on line {seen[key] + 1})", key_node.start_mark
                )
            if isinstance(key, str):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("int", r"^[-+]?(?:0|[1-9][0-9]*)$", "-+0123456789"),
    (
        "float",
        r"^[-+]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"
        r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$",
        "-+0123456789.",
    ),
    ("merge", r"^<<$", "<"),
):
    _SpecLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))


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
                str(job_path),
                None,
                f"not inside a project: no conf/defaults.yaml in {job_path.parent} or a folder above it, so "
                "tracking: and warehouse: are unset; create a project with `score init DIR` and put the job in "
                "DIR/conf/jobs/, or give the job its own tracking: and warehouse: sections",
            ) from None
        raise _spec_error(exc, origins) from None

    spec = _resolve_paths(spec, root, origins)
    return LoadedSpec(
        spec=spec,
        file=job_path,
        defaults_file=defaults_path,
        root=root,
        overrides=tuple(overrides),
        written=written,
        env_vars=_env_names(written),
    )


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
        if not key:  # the spec as a whole: the job file
            return str(self.job), None
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


def project_jobs(start: str | Path = ".") -> tuple[list[LoadedSpec], list[SpecError]]:
    """Every job of the project around `start` (conf/jobs/*.yaml and .yml), and the errors of those that do not
    load: what a command that must know who reads a table (`score drop`) looks through."""
    defaults_path, root = _find_defaults(Path(start).resolve() / "_")
    if defaults_path is None:
        raise SpecError(str(Path(start).resolve()), None, "no conf/defaults.yaml in this folder or above it")
    loaded, failed = [], []
    for file in sorted([*(root / "conf" / "jobs").glob("*.yaml"), *(root / "conf" / "jobs").glob("*.yml")]):
        try:
            loaded.append(load_spec(file))
        except SpecError as exc:
            failed.append(exc)
    return loaded, failed


def load_tracking(start: str | Path = ".", environ: dict[str, str] | None = None) -> TrackingSpec:
    """The `tracking:` settings of the project around `start`, for commands that run no job."""
    tracking, root = _defaults_section("tracking", TrackingSpec, start, environ)
    return _resolve_tracking(tracking, root)


def load_warehouse(start: str | Path = ".", environ: dict[str, str] | None = None) -> str:
    """The warehouse URI of the project around `start` (absolute, for a local folder)."""
    warehouse, root = _defaults_section("warehouse", WarehouseSpec, start, environ)
    return _local_path(warehouse.uri, root)


def _defaults_section(key: str, model: type[BaseModel], start: str | Path, environ: dict[str, str] | None):
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
    if not is_remote(input_path) and not Path(input_path).is_dir():
        where = origins.of(("input", "path"))
        raise SpecError(where, "input.path", f"{input_path} is a file; give the folder of the input's partitions")
    contract = spec.contract
    if contract:
        contract = contract.model_copy(update={"suite": local(contract.suite)})
        key = ("contract",) if isinstance(origins.value(("contract",)), str) else ("contract", "suite")
        must_exist(contract.suite, key, "contract file")
    model_uri = local(spec.model.uri)
    must_exist(model_uri, ("model", "uri"), "model file")
    challenger = local(spec.model.challenger) if spec.model.challenger else None
    if challenger:
        must_exist(challenger, ("model", "challenger"), "challenger model file")

    return spec.model_copy(
        update={
            "input": spec.input.model_copy(update={"path": input_path}),
            "contract": contract,
            "model": spec.model.model_copy(update={"uri": model_uri, "challenger": challenger}),
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
