"""Model artifacts: resolving a URI to one concrete, hashed file, and binding its inputs to columns.

Resolution and binding happen on the driver before any data is read, so that a missing model, a registry
alias that points nowhere, or a model input that the columns cannot build fails the run in seconds.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from jobs.errors import UsageError
from jobs.spec import ModelSpec, TrackingSpec

MODEL_SUFFIXES = (".onnx", ".pt", ".pt2", ".ts", ".torchscript")
_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
_ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}
_NUMPY_OK = {"float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool"}


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the model declares it; dims are None where dynamic."""

    name: str
    dtype: str  # numpy dtype name, or "string"
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class ModelArtifact:
    """One concrete model file: what the run scores with and what lineage records."""

    uri: str
    path: str
    runtime: str
    sha256: str
    registry_name: str | None
    version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def read_bytes(self) -> bytes:
        return Path(self.path).read_bytes()


@dataclass(frozen=True)
class InputBinding:
    name: str
    columns: tuple[str, ...]
    dtype: str
    rank: int


@dataclass(frozen=True)
class OutputBinding:
    name: str
    columns: tuple[str | None, ...]  # one per index of a 2-D output (None skips it), or a single column
    dtype: str
    per_index: bool = False
    as_list: bool = False  # a 2-D output kept whole, as a list column

    def fields(self) -> list[pa.Field]:
        value_type = pa.from_numpy_dtype(np.dtype(self.dtype))
        if self.as_list:
            value_type = pa.list_(value_type)
        return [pa.field(c, value_type) for c in self.columns if c is not None]


@dataclass(frozen=True)
class ModelBinding:
    """How each model input is built from columns and where each output goes: defined once, passed on."""

    inputs: tuple[InputBinding, ...]
    outputs: tuple[OutputBinding, ...]

    @property
    def input_columns(self) -> list[str]:
        return list(dict.fromkeys(c for b in self.inputs for c in b.columns))

    def output_fields(self) -> list[pa.Field]:
        return [f for b in self.outputs for f in b.fields()]


def resolve_model(spec: ModelSpec, tracking: TrackingSpec) -> ModelArtifact:
    """Resolve a local path or `models:/name@alias|version` once, to a file, a version and a sha256."""
    match = _REGISTRY_URI.match(spec.uri)
    if spec.uri.startswith("models:/") and not match:
        raise UsageError(f"model.uri {spec.uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    if match:
        path, name, version = _from_registry(match["name"], match["alias"], match["version"], tracking)
    else:
        path, name, version = Path(spec.uri), None, None
        if not path.is_file():
            raise UsageError(f"model.uri: model file not found: {spec.uri}")
    try:
        digest = _sha256(path)
    except OSError as exc:
        raise UsageError(f"model.uri: cannot read model file {path}: {exc.strerror}") from None
    runtime = spec.runtime or ("onnx" if path.suffix == ".onnx" else "torch")
    inputs, outputs = _signature(path, runtime, spec)
    return ModelArtifact(
        uri=spec.uri,
        path=str(path),
        runtime=runtime,
        sha256=digest,
        registry_name=name,
        version=version or f"sha256:{digest[:12]}",
        inputs=inputs,
        outputs=outputs,
    )


def bind_model(artifact: ModelArtifact, spec: ModelSpec, schema: pa.Schema, where: str) -> ModelBinding:
    """Check that every model input can be built from the input columns; name the input and column if not."""
    declared = {t.name: t for t in artifact.inputs}
    unknown = [name for name in spec.inputs if name not in declared]
    if unknown:
        raise UsageError(
            f"model.inputs names {unknown}, which the model does not have; its inputs are {list(declared)}"
        )
    inputs = []
    for tensor in artifact.inputs:
        mapped = spec.inputs.get(tensor.name, tensor.name)
        columns = (mapped,) if isinstance(mapped, str) else tuple(mapped)
        for column in columns:
            if column not in schema.names:
                hint = "" if tensor.name in spec.inputs else " (map it under model.inputs)"
                raise UsageError(
                    f"model input {tensor.name!r} needs column {column!r}, which {where} does not have{hint}"
                )
            problem = _cast_problem(schema.field(column).type, tensor.dtype)
            if problem:
                raise UsageError(f"model input {tensor.name!r} ({tensor.dtype}) from column {column!r}: {problem}")
        rank = len(tensor.shape) if tensor.shape else 2
        width = tensor.shape[1] if tensor.shape and len(tensor.shape) > 1 else None
        if rank == 1 and len(columns) != 1:
            raise UsageError(f"model input {tensor.name!r} is 1-D: map it to one column, not {len(columns)}")
        if width is not None and width != len(columns):
            raise UsageError(
                f"model input {tensor.name!r} takes {width} column(s) per row; model.inputs gives {len(columns)}"
            )
        inputs.append(InputBinding(tensor.name, columns, tensor.dtype, rank))

    produced = {t.name: t for t in artifact.outputs}
    outputs = []
    for name, target in spec.outputs.items():
        if name not in produced:
            raise UsageError(f"model.outputs names {name!r}, which the model does not produce: {list(produced)}")
        tensor = produced[name]
        if tensor.dtype not in _NUMPY_OK:
            raise UsageError(
                f"model output {name!r} is {tensor.dtype}, not a tensor; re-export it as a tensor "
                "(for skl2onnx classifiers: options={'zipmap': False})"
            )
        width = tensor.shape[1] if tensor.shape and len(tensor.shape) > 1 else None
        if isinstance(target, list):
            if width is not None and width != len(target):
                raise UsageError(f"model output {name!r} has {width} values per row; model.outputs lists {len(target)}")
            outputs.append(OutputBinding(name, tuple(target), tensor.dtype, per_index=True))
        else:
            as_list = tensor.shape is not None and len(tensor.shape) > 1 and width != 1
            outputs.append(OutputBinding(name, (target,), tensor.dtype, as_list=as_list))
    return ModelBinding(tuple(inputs), tuple(outputs))


def _cast_problem(column: pa.DataType, dtype: str) -> str | None:
    if pa.types.is_dictionary(column):
        column = column.value_type
    is_text = pa.types.is_string(column) or pa.types.is_large_string(column)
    if dtype == "string":
        return None if is_text else f"column is {column}, model wants strings"
    if is_text:
        return f"column is {column} (text), model wants {dtype} numbers"
    numeric = pa.types.is_integer(column) or pa.types.is_floating(column) or pa.types.is_boolean(column)
    if not numeric and not pa.types.is_decimal(column):
        return f"column is {column}, which cannot be cast to {dtype}"
    if dtype.startswith(("int", "uint")) and (pa.types.is_floating(column) or pa.types.is_decimal(column)):
        return f"column is {column}; casting it to {dtype} would truncate values"
    if dtype == "bool" and not pa.types.is_boolean(column):
        return f"column is {column}, model wants booleans"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _from_registry(name: str, alias: str | None, version: str | None, tracking: TrackingSpec):
    import mlflow
    from mlflow.exceptions import MlflowException

    from jobs.tracking import connect

    client = connect(tracking)
    uri = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        raise UsageError(f"model.uri {uri}: not found in the registry at {tracking.uri} ({exc.message})") from None
    folder = Path(tempfile.mkdtemp(prefix=f"score-model-{name}-{mv.version}-"))
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(folder))
    except MlflowException as exc:
        raise UsageError(f"model.uri {uri}: version {mv.version} has no downloadable artifact ({exc.message})") from None
    files = sorted(p for p in folder.rglob("*") if p.suffix in MODEL_SUFFIXES)
    if len(files) != 1:
        raise UsageError(
            f"model.uri {uri}: version {mv.version} holds {len(files)} model files {[p.name for p in files]}; "
            f"expected exactly one of {MODEL_SUFFIXES}"
        )
    return files[0], name, str(mv.version)


def register_model(path: str | Path, name: str, alias: str | None, tracking: TrackingSpec) -> str:
    """Register a model file as a new version of `name` (logged as a run artifact) and point `alias` at it.

    Idempotent: a file whose sha256 is already a version of `name` reuses that version.
    """
    import mlflow

    from jobs.tracking import connect

    path = Path(path)
    if path.suffix not in MODEL_SUFFIXES or not path.is_file():
        raise UsageError(f"{path}: expected an existing model file ending in one of {MODEL_SUFFIXES}")
    digest = _sha256(path)
    client = connect(tracking)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    same = [v for v in client.search_model_versions(f"name = '{name}'") if v.tags.get("sha256") == digest]
    if same:
        version = same[0].version
    else:
        with mlflow.start_run(run_name=f"register {name}") as run:
            mlflow.log_artifact(str(path), artifact_path="model")
            mlflow.set_tags({"score.kind": "model-registration", "model.sha256": digest})
        version = client.create_model_version(
            name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags={"sha256": digest}
        ).version
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return str(version)


def _signature(path: Path, runtime: str, spec: ModelSpec) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    if runtime == "onnx":
        return _onnx_signature(path)
    return _torch_signature(path, spec)


def _onnx_signature(path: Path):
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable models
        raise UsageError(f"model.uri: {path} is not a loadable ONNX model: {str(exc).splitlines()[0]}") from None

    def spec_of(arg) -> TensorSpec:
        shape = tuple(d if isinstance(d, int) else None for d in arg.shape) if arg.shape is not None else None
        return TensorSpec(arg.name, _ONNX_TYPES.get(arg.type, arg.type), shape)

    return tuple(spec_of(a) for a in session.get_inputs()), tuple(spec_of(a) for a in session.get_outputs())


def _torch_signature(path: Path, spec: ModelSpec):
    """Torch programs declare input names but not always types: probe with two rows of zeros."""
    from jobs.runtimes import load_torch_module

    try:
        module, names = load_torch_module(path.read_bytes(), path.suffix)
    except Exception as exc:  # torch raises RuntimeError for anything it cannot deserialise
        raise UsageError(f"model.uri: {path} is not a loadable TorchScript or torch.export program: "
                         f"{str(exc).splitlines()[0]}") from None
    import torch

    inputs = []
    probe = []
    for name in names:
        mapped = spec.inputs.get(name, name)
        width = 1 if isinstance(mapped, str) else len(mapped)
        dtype = spec.input_dtypes.get(name, "float32")
        shape = (None,) if isinstance(mapped, str) else (None, width)
        inputs.append(TensorSpec(name, dtype, shape))
        probe.append(torch.zeros((2, *shape[1:]), dtype=getattr(torch, dtype)))
    try:
        with torch.no_grad():
            result = module(*probe)
    except Exception as exc:
        raise UsageError(f"model {path} rejects inputs shaped from model.inputs: {str(exc).splitlines()[0]}") from None
    results = result if isinstance(result, (tuple, list)) else (result,)
    if len(results) < len(spec.outputs):
        raise UsageError(f"model.outputs maps {len(spec.outputs)} outputs; the torch model returns {len(results)}")
    outputs = tuple(
        TensorSpec(name, str(t.dtype).removeprefix("torch."), (None, *t.shape[1:]))
        for name, t in zip(spec.outputs, results)
    )
    return tuple(inputs), outputs
