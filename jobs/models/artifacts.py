"""Model artifacts: one concrete, hashed model file with its signature, and its inputs bound to columns.

Both happen on the driver before any data is read (a registry URI is resolved to a file first:
`jobs.tracking.registry`), so that a missing or altered model, or a model input that the columns cannot
build, fails the run in seconds.
"""

from __future__ import annotations

import hashlib
import mmap
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
from google.protobuf.message import DecodeError

from jobs.column_types import MANTISSA_BITS, stored_type
from jobs.errors import ERROR_LINE, UsageError
from jobs.models.runtimes import ModelFiles, load_torch_module, torch_outputs
from jobs.models.text import ATTENTION_MASK, TOKEN_COLUMNS, TOKEN_TYPE_IDS, TextInput, load_tokenizer
from jobs.spec.schema import ModelSpec

MODEL_SUFFIXES = (".onnx", ".pt", ".pt2", ".ts", ".torchscript")
_ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint64)": "uint64",
    "tensor(uint32)": "uint32",
    "tensor(uint16)": "uint16",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}
NUMBERS = {
    "float32",
    "float64",
    "float16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint64",
    "uint32",
    "uint16",
    "uint8",
}  # numeric input dtypes: range-checked
_NUMPY_OK = NUMBERS | {"bool"}


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the model declares it; dims are None where dynamic."""

    name: str
    dtype: str  # numpy dtype name, or "string"
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of a registered model, as the registry describes it (`jobs.tracking.registry`)."""

    name: str
    version: str
    sha256: str | None  # recorded at registration; None for a version another tool registered


@dataclass(frozen=True)
class ModelArtifact:
    """One concrete model file (plus its ONNX external-data files): what the run scores with and what
    lineage records. `sha256` covers the side files too (see `model_sha256`)."""

    uri: str
    path: str
    runtime: str
    sha256: str
    registry_name: str | None
    version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    external: tuple[str, ...] = ()  # external-data locations, relative to the model file's folder
    tokenizer: str | None = None  # the tokenizer file shipped with the model (model.tokenizer); in `sha256` too
    precision: str = "fp32"  # scoring.precision (jobs.models.precision); `path` and `sha256` stay the source model's
    converted_path: str | None = None  # the cached fp16/int8 conversion of an ONNX model, scored instead of `path`
    converted_external: tuple[str, ...] = ()

    def read_bytes(self) -> bytes:
        return Path(self.path).read_bytes()

    def files(self) -> ModelFiles:
        """Everything the actors need to load the model, read once on the driver (the converted model, if any)."""
        if self.converted_path:
            return ModelFiles.read(self.converted_path, self.converted_external, self.precision)
        return ModelFiles.read(self.path, self.external, self.precision)


@dataclass(frozen=True)
class InputBinding:
    name: str
    columns: tuple[str, ...]
    dtype: str
    rank: int
    tokens: bool = False  # a token column [N, max_length] made by the tokenize stage (jobs.models.text), not read


@dataclass(frozen=True)
class OutputBinding:
    name: str
    columns: tuple[str | None, ...]  # one per index of a 2-D output (None skips it), or a single column
    dtype: str
    per_index: bool = False
    as_list: bool = False  # a 2-D output kept whole, as a fixed-size list column of `width` values
    width: int | None = None
    pooling: str | None = None  # token states [N, T, D] pooled to [N, D] first (jobs.models.text.pool)

    def fields(self) -> list[pa.Field]:
        if self.dtype == "string":  # class labels of a classifier with string classes
            value_type = pa.string()
        else:  # float16 as float32; unsigned integers as the tables store them (Delta has no unsigned type)
            value_type = pa.from_numpy_dtype(np.dtype("float32" if self.dtype == "float16" else self.dtype))
            if pa.types.is_unsigned_integer(value_type):
                value_type = stored_type(value_type)
        if self.as_list:
            value_type = pa.list_(value_type, self.width)
        return [pa.field(c, value_type) for c in self.columns if c is not None]


@dataclass(frozen=True)
class ModelBinding:
    """How each model input is built from columns and where each output goes: defined once, passed on."""

    inputs: tuple[InputBinding, ...]
    outputs: tuple[OutputBinding, ...]
    text: TextInput | None = None  # token inputs are made from this text column
    batch: int | None = None  # the rows per call the model's inputs fix (None: any): batches are cut and padded

    @property
    def input_columns(self) -> list[str]:
        """The columns read from the input files (for token inputs: the text column)."""
        read = [c for b in self.inputs if not b.tokens for c in b.columns]
        return list(dict.fromkeys(read + ([self.text.column] if self.text else [])))

    def output_fields(self) -> list[pa.Field]:
        return [f for b in self.outputs for f in b.fields()]


def model_artifact(spec: ModelSpec, path: Path, registered: RegisteredVersion | None = None) -> ModelArtifact:
    """The model file at `path` (from `model.uri`, or a registry version downloaded there) as one concrete,
    hashed artifact with its signature. A registry version's files must hash to what was registered."""
    where = f"model.uri {spec.uri} (version {registered.version})" if registered else "model.uri"
    if registered is None and not path.is_file():
        raise UsageError(f"model.uri: model file not found: {spec.uri}")
    runtime = spec.runtime or ("onnx" if path.suffix == ".onnx" else "torch")
    try:
        external = external_data(path, where) if runtime == "onnx" else ()
        digest = model_sha256(path, external)
    except OSError as exc:
        raise UsageError(f"model.uri: cannot read model file {path}: {exc.strerror}") from None
    tokenizer = path.parent / spec.tokenizer.file if spec.tokenizer else None
    if tokenizer is not None:
        load_tokenizer(tokenizer, spec.tokenizer.max_length)
    if registered and registered.sha256 and digest != registered.sha256:
        name = registered.name
        raise UsageError(
            f"model.uri {spec.uri}: version {registered.version} of {name!r} is not the model that was registered: "
            f"its files hash to sha256 {digest}, but the registry recorded sha256 {registered.sha256} at "
            "registration, so the artifact was changed or replaced since. Nothing was scored. Restore the original "
            f"files, or register the intended model as a new version (score register-model FILE --name {name} "
            "--alias ALIAS) and score that version."
        )
    inputs, outputs = _signature(path, runtime, spec)
    if tokenizer is not None:  # after the registry check, which knows the model files only
        digest = hashlib.sha256(f"{digest}\n{_sha256(tokenizer)}  tokenizer".encode()).hexdigest()
    return ModelArtifact(
        uri=spec.uri,
        path=str(path),
        runtime=runtime,
        sha256=digest,
        registry_name=registered.name if registered else None,
        version=registered.version if registered else f"sha256:{digest[:12]}",
        inputs=inputs,
        outputs=outputs,
        external=external,
        tokenizer=str(tokenizer) if tokenizer else None,
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
        if spec.tokenizer and mapped in TOKEN_COLUMNS:
            inputs.append(_token_input(tensor, mapped, spec.tokenizer.max_length))
            continue
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
        if rank not in (1, 2):
            raise UsageError(
                f"model input {tensor.name!r} is {_dims(tensor.shape)}: input columns give one value per column per "
                "row ([N] or [N, columns]); re-export the model with a 2-D input, or reshape inside it"
            )
        if rank == 1 and len(columns) != 1:
            raise UsageError(f"model input {tensor.name!r} is 1-D: map it to one column, not {len(columns)}")
        if width is not None and width != len(columns):
            raise UsageError(
                f"model input {tensor.name!r} takes {width} column(s) per row; model.inputs gives {len(columns)}"
            )
        inputs.append(InputBinding(tensor.name, columns, tensor.dtype, rank))
    batch = _static_batch(artifact.inputs)
    text = _text_input(artifact, spec, schema, where, inputs)
    if spec.pooling and text is None:
        raise UsageError("model.pooling needs model.tokenizer: pooling averages token states over the attention mask")

    produced = {t.name: t for t in artifact.outputs}
    outputs = []
    for name, target in spec.outputs.items():
        if name not in produced:
            raise UsageError(f"model.outputs names {name!r}, which the model does not produce: {list(produced)}")
        tensor = produced[name]
        if tensor.dtype not in _NUMPY_OK and tensor.dtype != "string":
            raise UsageError(
                f"model output {name!r} is {tensor.dtype}, not a tensor; re-export it as a tensor "
                "(for skl2onnx classifiers: options={'zipmap': False})"
            )
        shape, pooling = tensor.shape, None
        _check_rows(tensor, batch)
        if shape is not None and len(shape) == 3:
            if not spec.pooling:
                raise UsageError(
                    f"model output {name!r} is token states {_dims(shape)}: set model.pooling (mean or "
                    "cls) to store one vector per row"
                )
            shape, pooling = (shape[0], shape[2]), spec.pooling
        width = shape[1] if shape and len(shape) > 1 else None
        if isinstance(target, list):
            if shape is not None and len(shape) == 1 and len(target) != 1:
                raise UsageError(
                    f"model output {name!r} is 1-D ({_dims(shape)}): one value per row; model.outputs maps it to "
                    f"{len(target)} columns: map it to one column"
                )
            if width is not None and width != len(target):
                raise UsageError(f"model output {name!r} has {width} values per row; model.outputs lists {len(target)}")
            outputs.append(OutputBinding(name, tuple(target), tensor.dtype, per_index=True))
        else:
            as_list = shape is not None and len(shape) > 1 and width != 1
            outputs.append(
                OutputBinding(
                    name, (target,), tensor.dtype, as_list=as_list, width=width if as_list else None, pooling=pooling
                )
            )
    mapped_to: dict[str, list[str]] = {}
    for o in outputs:
        for column in o.columns:
            if column is not None:
                mapped_to.setdefault(column, []).append(o.name)
    twice = {column: names for column, names in mapped_to.items() if len(names) > 1}
    if twice:
        column, names = next(iter(twice.items()))
        raise UsageError(
            f"model.outputs: {' and '.join(repr(n) for n in dict.fromkeys(names))} both map to column {column!r}: "
            "give each output a column of its own"
        )
    if spec.pooling and not any(o.pooling for o in outputs):
        raise UsageError(
            f"model.pooling is {spec.pooling}, but no output mapped in model.outputs is token states "
            "[N, T, D]: remove model.pooling"
        )
    return ModelBinding(tuple(inputs), tuple(outputs), text, batch)


def _static_batch(inputs: tuple[TensorSpec, ...]) -> int | None:
    """The batch size a model's inputs fix in their first dimension (None: dynamic); they must agree."""
    fixed = {t.name: t.shape[0] for t in inputs if t.shape and isinstance(t.shape[0], int)}
    if len(set(fixed.values())) > 1:
        raise UsageError(f"the model's inputs fix different batch sizes: {fixed}; re-export them with one")
    return next(iter(fixed.values()), None)


def _check_rows(tensor: TensorSpec, batch: int | None) -> None:
    """An output must have one row per input row: its first dimension is the batch's."""
    shape = tensor.shape
    if shape is not None and len(shape) == 0:
        raise UsageError(
            f"model output {tensor.name!r} is a scalar (0-d), not one value per row: re-export the model so that "
            "it returns [N] or [N, k] for N input rows"
        )
    if shape and isinstance(shape[0], int) and shape[0] != batch:
        of = f"a batch of {batch} rows (the inputs' fixed size)" if batch else "any number of input rows"
        raise UsageError(
            f"model output {tensor.name!r} is {_dims(shape)}: it returns {shape[0]} row(s) for {of}, not one per "
            "input row (a reduction over the batch?); re-export the model so that the output's first dimension is "
            "the batch"
        )


def precision_columns(binding: ModelBinding, schema: pa.Schema) -> set[str]:
    """Integer columns feeding a float input too narrow to hold every integer of their type exactly."""
    return {column for b, column, _ in _rounding(binding, schema)}


def precision_warnings(binding: ModelBinding, schema: pa.Schema, largest: dict[str, int | None]) -> list[str]:
    """Those columns whose values (`largest`: their largest magnitude in the files, None: unknown) a float input
    rounds: no row fails (16777217 is scored as 16777216 in float32), so the plan says it."""
    found = []
    for b, column, bits in _rounding(binding, schema):
        magnitude = largest.get(column)
        if magnitude is None or magnitude > 2**bits:
            seen = "" if magnitude is None else f", and the files hold values up to {magnitude}"
            found.append(
                f"model input {b.name!r} ({b.dtype}) from column {column!r} ({schema.field(column).type}): integers "
                f"beyond 2^{bits} in magnitude are rounded to the nearest {b.dtype} ({2**bits + 1} is scored as "
                f"{2**bits}){seen}"
            )
    return found


def _rounding(binding: ModelBinding, schema: pa.Schema) -> list[tuple[InputBinding, str, int]]:
    """(input, column, mantissa bits) of each integer column wider than its float input's mantissa."""
    found = []
    for b in binding.inputs:
        if b.tokens or not b.dtype.startswith("float"):
            continue
        bits = MANTISSA_BITS[np.dtype(b.dtype).itemsize * 8]
        for column in b.columns:
            kind = schema.field(column).type
            if pa.types.is_integer(kind) and kind.bit_width > bits:
                found.append((b, column, bits))
    return found


def _token_input(tensor: TensorSpec, column: str, max_length: int) -> InputBinding:
    """A model input fed from the tokenize stage: integer ids [N, max_length]."""
    if not tensor.dtype.startswith(("int", "uint")):
        raise UsageError(
            f"model input {tensor.name!r} ({tensor.dtype}) is fed {column} from model.tokenizer, "
            "which are integers: re-export the model with an int64 input"
        )
    length = tensor.shape[1] if tensor.shape and len(tensor.shape) == 2 else None
    if tensor.shape is not None and len(tensor.shape) != 2:
        raise UsageError(f"model input {tensor.name!r} is {_dims(tensor.shape)}; token inputs are [N, T]")
    if length is not None and length != max_length:
        raise UsageError(
            f"model input {tensor.name!r} takes {length} tokens per row; model.tokenizer.max_length is "
            f"{max_length}: set it to {length}"
        )
    return InputBinding(tensor.name, (column,), tensor.dtype, 2, tokens=True)


def _text_input(
    artifact: ModelArtifact, spec: ModelSpec, schema: pa.Schema, where: str, inputs: list[InputBinding]
) -> TextInput | None:
    """The tokenize stage's settings, once its text column and the model's token inputs are checked."""
    if spec.tokenizer is None:
        return None
    column = spec.tokenizer.column
    if column not in schema.names:
        raise UsageError(f"model.tokenizer.column: column {column!r} is not in {where}; columns are {schema.names}")
    if _cast_problem(schema.field(column).type, "string"):
        raise UsageError(
            f"model.tokenizer.column: column {column!r} is {schema.field(column).type} in {where}, not text"
        )
    fed = {b.columns[0] for b in inputs if b.tokens}
    if not fed:
        raise UsageError(
            f"model.tokenizer: no model input takes token ids ({', '.join(TOKEN_COLUMNS)}, by name or "
            f"mapped under model.inputs); the model's inputs are {[t.name for t in artifact.inputs]}"
        )
    return TextInput(
        artifact.tokenizer,
        Path(artifact.tokenizer).read_text(),
        column,
        spec.tokenizer.max_length,
        token_type_ids=TOKEN_TYPE_IDS in fed,
    )


def _dims(shape: tuple[int | None, ...]) -> str:
    """`[N, ?, 768]`: a dynamic batch dimension is N, another dynamic one ?."""
    return "[" + ", ".join(("N" if i == 0 else "?") if d is None else str(d) for i, d in enumerate(shape)) + "]"


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


def model_sha256(path: Path, external: tuple[str, ...]) -> str:
    """A single file's plain sha256 (what existing tables recorded); with external data, the sha256 of the
    model file's sha256 followed by one `sha256  location` line per side file in order, so lineage and
    `unscored` notice changed weights too."""
    main = _sha256(path)
    if not external:
        return main
    lines = [main, *(f"{_sha256(path.parent / loc)}  {loc}" for loc in external)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def external_data(path: Path, where: str) -> tuple[str, ...]:
    """The external-data files an ONNX model keeps its weights in (sorted), each checked to be next to it."""
    try:
        locations = _onnx_external_locations(path)
    except DecodeError:  # not an ONNX model: the signature check names the problem
        return ()
    for loc in locations:
        relative = PurePosixPath(loc)
        if relative.is_absolute() or ".." in relative.parts or "\\" in loc:
            raise UsageError(
                f"{where}: {path.name} refers to external data {loc!r} outside its folder; "
                "re-save the model with a plain relative location (onnx.save_model(..., location=...))"
            )
        if not (path.parent / loc).is_file():
            raise UsageError(
                f"{where}: {path.name} keeps weights in the external data file {loc!r}, which is missing "
                f"({path.parent / loc}); put it next to the model file (with `score register-model`, register "
                "the .onnx from the folder that holds it: its external data files are uploaded with it)"
            )
    return tuple(sorted(locations))


def _onnx_external_locations(path: Path) -> set[str]:
    """The `location` of every tensor the model keeps as external data (initializers and node attributes,
    in subgraphs too), as onnx's own external-data helper walks them; the weights themselves are not read."""
    # onnx takes 0.6 s to import (most of a small run's planning), and the scoring actors import this module
    # (for the bindings) without needing it. Every external-data entry spells its key `location` in the file's
    # bytes, so a model without those bytes (nearly every model) has none, and onnx is never imported for it.
    if path.stat().st_size == 0:
        return set()
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data.find(b"location") < 0:
            return set()
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    return {
        entry.value
        for tensor in _get_all_tensors(model)
        if uses_external_data(tensor)
        for entry in tensor.external_data
        if entry.key == "location"
    }


def _signature(path: Path, runtime: str, spec: ModelSpec) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    if runtime == "onnx":
        return _onnx_signature(path, spec)
    return _torch_signature(path, spec)


def _onnx_signature(path: Path, spec: ModelSpec):
    import onnxruntime as ort  # optional: the cpu or gpu extra installs it, and a torch model never needs it

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable models
        raise UsageError(f"model.uri: {path} is not a loadable ONNX model: {str(exc).splitlines()[0]}") from None

    def spec_of(arg) -> TensorSpec:
        shape = tuple(d if isinstance(d, int) else None for d in arg.shape) if arg.shape is not None else None
        return TensorSpec(arg.name, _ONNX_TYPES.get(arg.type, arg.type), shape)

    inputs, outputs = tuple(spec_of(a) for a in session.get_inputs()), tuple(spec_of(a) for a in session.get_outputs())
    tensors = [t for t in outputs if t.name in spec.outputs and (t.dtype in _NUMPY_OK or t.dtype == "string")]
    mapped = [t for t in tensors if t.shape]
    symbolic = [t.name for t in mapped if None in t.shape[1:]]
    batch = _static_batch(inputs)
    # Exporters declare output rows loosely (onnxmltools gives LightGBM's label [1]), or not at all: a probe
    # says what they are.
    rows_unknown = [t.name for t in mapped if t.shape[0] is None or t.shape[0] != batch]
    rows_unknown += [t.name for t in tensors if t.shape is None]
    probed_names = list(dict.fromkeys(symbolic + rows_unknown))
    if not probed_names:
        return inputs, outputs
    # A list column's width must be known before any row is read (the table's schema is fixed), and an output
    # must have a row per input row: run a probe of a few rows.
    rows = batch or PROBE_ROWS
    feeds = {t.name: _probe(t, spec, rows) for t in inputs}
    try:
        results = session.run(probed_names, feeds)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        if not symbolic:  # only the outputs' rows were in question: each batch's are checked as it is scored
            unknown = {name: (None, *t.shape[1:]) for t in mapped if (name := t.name) in rows_unknown}  # unshaped: None
            return inputs, tuple(TensorSpec(t.name, t.dtype, unknown.get(t.name, t.shape)) for t in outputs)
        raise UsageError(
            f"model output(s) {symbolic} have symbolic dimensions and the model rejects a probe of {rows} "
            f"rows shaped from model.inputs ({str(exc).splitlines()[0]}); re-export it with fixed output "
            "dimensions"
        ) from None
    probed = {name: _probed_shape(r.shape, rows) for name, r in zip(probed_names, results)}
    return inputs, tuple(TensorSpec(t.name, t.dtype, probed.get(t.name, t.shape)) for t in outputs)


def _probed_shape(shape: tuple[int, ...], rows: int) -> tuple[int | None, ...]:
    """An output's shape as a probe of `rows` rows shows it: the first dimension is the batch's (None) when it
    had that many rows, else the fixed size it had (which `bind_model` refuses)."""
    if not shape:
        return ()
    return (None if shape[0] == rows else int(shape[0]), *(int(d) for d in shape[1:]))


PROBE_ROWS = 3  # rows of a probe: not 1 or 2, which a batch-independent output (two classes) could equal


def _probe(tensor: TensorSpec, spec: ModelSpec, rows: int = PROBE_ROWS) -> np.ndarray:
    """`rows` rows for `tensor`, shaped as the job feeds it: zeros (ones for an attention mask, "" for strings)."""
    mapped = spec.inputs.get(tensor.name, tensor.name)
    shape: tuple[int, ...]
    if spec.tokenizer and mapped in TOKEN_COLUMNS:
        shape = (rows, spec.tokenizer.max_length)
    elif tensor.shape is not None and len(tensor.shape) == 1:
        shape = (rows,)
    else:
        shape = (rows, (tensor.shape[1] if tensor.shape else None) or (1 if isinstance(mapped, str) else len(mapped)))
    if tensor.dtype == "string":
        return np.full(shape, "", dtype=object)
    return (np.ones if mapped == ATTENTION_MASK else np.zeros)(shape, dtype=tensor.dtype)


def _torch_signature(path: Path, spec: ModelSpec):
    """Torch programs declare input names but not always types or shapes: probe with rows of zeros."""
    try:
        module, names = load_torch_module(path.read_bytes(), path.suffix)
    except Exception as exc:  # torch raises RuntimeError for anything it cannot deserialise
        raise UsageError(
            f"model.uri: {path} is not a loadable TorchScript or torch.export program: {str(exc).splitlines()[0]}"
        ) from None
    import torch  # optional (not a dependency): only torch models need it

    inputs = []
    probe = []
    for name in names:
        mapped = spec.inputs.get(name, name)
        if spec.tokenizer and mapped in TOKEN_COLUMNS:
            tensor = TensorSpec(name, spec.input_dtypes.get(name, "int64"), (None, spec.tokenizer.max_length))
        else:
            shape = (None,) if isinstance(mapped, str) else (None, len(mapped))
            tensor = TensorSpec(name, spec.input_dtypes.get(name, "float32"), shape)
        inputs.append(tensor)
        probe.append(torch.from_numpy(_probe(tensor, spec)))
    try:
        with torch.no_grad():
            result = module(*probe)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, TorchScript wraps the model's own error
        found = ERROR_LINE.findall(str(exc))  # TorchScript's first line says only that an operation failed
        error = ": ".join(found[-1]) if found else str(exc).splitlines()[0]
        fed = ", ".join(f"{t.name} {t.dtype}{_dims((PROBE_ROWS, *(t.shape or ())[1:]))}" for t in inputs)
        hint = ""
        if re.search(r"dtype|scalar type|Double|Float|Half|Long|Int|float\d+", error):
            hint = "; torch programs do not declare input dtypes: set them with model.input_dtypes (e.g. {x: float64})"
        raise UsageError(
            f"model {path} rejects a probe of inputs shaped from model.inputs ({fed}): {error}{hint}"
        ) from None
    try:
        results = torch_outputs(result, list(spec.outputs))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    outputs = tuple(
        TensorSpec(name, str(t.dtype).removeprefix("torch."), _probed_shape(tuple(t.shape), PROBE_ROWS))
        for name, t in results.items()
    )
    return tuple(inputs), outputs
