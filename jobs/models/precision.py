"""Reduced precision (`scoring.precision`): which runtime can do what, and ONNX models converted once.

torch does fp16/bf16 itself (autocast, jobs.models.runtimes). ONNX models are converted on the driver before
Ray starts: fp16 with ONNX Runtime's float16 converter (float32 inputs and outputs kept, so the plan's
bindings hold) and int8 with ONNX Runtime's dynamic quantization. A conversion takes seconds to minutes on
a big model, so it is done once and cached in the project's `.score/cache/models/`, keyed by the source
model's sha256 and the precision: a changed model never reuses a stale conversion, a registry version (a
fresh temporary download each run) and a read-only model folder are cached alike, and nothing is written
beside the user's model. Runs converting the same model at once take a file lock; the conversion is written
to a temporary folder and renamed into place, so a crash never leaves a half-written cache entry.
Lineage keeps the source model's sha256; the precision is recorded beside it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from filelock import FileLock

from jobs.errors import UsageError
from jobs.models.runtimes import ModelFiles, open_runtime

if TYPE_CHECKING:
    from jobs.models.artifacts import ModelArtifact

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
MODEL_FILE = "model.onnx"
EXTERNAL_FILE = "model.onnx.data"  # a converted model whose source kept external data keeps it in this one file
_QUANTIZED_OPS = (
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeMatMul",
    "QAttention",
    "QGemm",
    "MatMulIntegerToFloat",
    "DynamicQuantizeLSTM",
)


@dataclass(frozen=True)
class Converted:
    """A converted model in the cache: its file and external-data locations (relative to its folder)."""

    path: Path
    external: tuple[str, ...]


def cache_folder(project_root: Path) -> Path:
    """Where converted models live: the project's state folder, git-ignored and never shipped to a cluster."""
    return Path(project_root) / ".score" / "cache" / "models"


def check_precision(precision: str, runtime: str, where: str = "scoring.precision") -> None:
    """Refuse a precision the model's runtime cannot score in, saying what to use instead."""
    if precision not in PRECISIONS:
        raise UsageError(f"{where}: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "int8" and runtime != "onnx":
        raise UsageError(
            f"{where}: int8 is for ONNX models (ONNX Runtime dynamic quantization), and this model runs in "
            f"{runtime}: use fp16 or bf16 (torch autocast), or export the model to ONNX"
        )
    if precision == "bf16" and runtime == "onnx":
        raise UsageError(
            f"{where}: bf16 is for torch models (autocast); ONNX Runtime has no bfloat16 kernels for most "
            "operators: use fp16 for an ONNX model (converted once, float32 inputs and outputs kept)"
        )


def with_precision(
    model: ModelArtifact, precision: str, project_root: Path, where: str = "scoring.precision"
) -> ModelArtifact:
    """The artifact to score `model` with at `precision`: for ONNX fp16/int8, its cached conversion (made now
    if missing). The source path and sha256 stay: they are what lineage and `unscored` go by."""
    check_precision(precision, model.runtime, where)
    if model.runtime != "onnx" or precision == "fp32":
        return replace(model, precision=precision)
    converted = convert(
        Path(model.path),
        model.sha256,
        precision,
        model.external,
        cache_folder(project_root),
        where=f"{where} {precision} (model {model.uri})",
    )
    return replace(
        model, precision=precision, converted_path=str(converted.path), converted_external=converted.external
    )


def convert(
    source: Path,
    sha256: str,
    precision: str,
    external: tuple[str, ...] = (),
    cache_dir: Path | None = None,
    where: str = "scoring.precision",
) -> Converted:
    """The `precision` conversion of the ONNX model `source` (whose sha256 is `sha256`), from the cache or
    made now. Safe when several processes ask at once: one converts, the others wait and reuse it."""
    if precision not in _CONVERTERS:
        raise ValueError(f"no ONNX conversion for precision {precision!r}; expected one of {list(_CONVERTERS)}")
    cache_dir = Path(cache_dir or cache_folder(Path.cwd()))
    folder = cache_dir / f"{sha256}-{precision}"
    if (folder / MODEL_FILE).is_file():
        return _cached(folder)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f"{folder.name}.lock")):
        if (folder / MODEL_FILE).is_file():  # another run converted it while this one waited
            return _cached(folder)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=cache_dir))
        try:
            started = time.perf_counter()
            given = source  # the quantizer writes `<model>-inferred.onnx` beside the model it is given:
            if precision == "int8":
                given = _copied(source, external, staging / "source")
            _CONVERTERS[precision](given, staging / MODEL_FILE, bool(external), where)
            _check_loadable(staging, where)
            (staging / "conversion.json").write_text(json.dumps(_provenance(source, sha256, precision)))
            shutil.rmtree(staging / "source", ignore_errors=True)
            os.rename(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "%s: converted %s to %s in %.1f s, cached in %s",
        where,
        source.name,
        precision,
        time.perf_counter() - started,
        folder,
    )
    return _cached(folder)


def _copied(source: Path, external: tuple[str, ...], into: Path) -> Path:
    """`source` and its external-data files, copied `into` the cache's staging folder, for a converter that
    writes beside the model it converts: nothing is written next to the user's files, whose folder may be
    read-only. Copied, not linked: onnx refuses external data behind a symbolic or hard link."""
    for name in (source.name, *external):
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.parent / name, into / name)
    return into / source.name


def _cached(folder: Path) -> Converted:
    external = (EXTERNAL_FILE,) if (folder / EXTERNAL_FILE).is_file() else ()
    return Converted(folder / MODEL_FILE, external)


def _to_fp16(source: Path, target: Path, external: bool, where: str) -> None:
    # onnx and the float16 converter take 0.6 s each to import: only a conversion (cached once made) needs them.
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))  # external data is read from the source's folder
    try:
        converted = convert_float_to_float16(model, keep_io_types=True)
    except Exception as exc:  # the converter raises bare exceptions on graphs it cannot handle
        raise UsageError(
            f"{where}: ONNX Runtime's float16 converter failed on {source.name}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; score it in fp32, "
            "or export the model in float16 yourself"
        ) from None
    _save(converted, target, external)


def _to_int8(source: Path, target: Path, external: bool, where: str) -> None:
    from onnxruntime.quantization import quantize_dynamic  # it imports onnx (0.6 s): conversions only

    root = logging.getLogger()
    root.addFilter(_drop_preprocessing_advice)
    try:
        quantize_dynamic(str(source), str(target), use_external_data_format=external)
    except Exception as exc:
        raise UsageError(
            f"{where}: ONNX Runtime's dynamic quantization failed on {source.name}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; score it in fp32 "
            "or fp16"
        ) from None
    finally:
        root.removeFilter(_drop_preprocessing_advice)
    if external:  # quantize_dynamic names its side file after the model: normalise to EXTERNAL_FILE
        _save(_load(target), target, True)
    if not any(n.op_type in _QUANTIZED_OPS for n in _load(target, with_data=False).graph.node):
        log.warning(
            "%s: %s has no operator that dynamic quantization handles (MatMul, Gemm, Conv, Attention, "
            "LSTM), so int8 scores it exactly as fp32 does",
            where,
            source.name,
        )


def _drop_preprocessing_advice(record: logging.LogRecord) -> bool:
    """quantize_dynamic logs advice for static quantization (with a web link) on every call: not ours to give."""
    return not record.getMessage().startswith("Please consider to run pre-processing")


def _load(path: Path, with_data: bool = True):
    import onnx  # 0.6 s to import: conversions only

    return onnx.load(str(path), load_external_data=with_data)


def _save(model, target: Path, external: bool) -> None:
    """One file, or, when the source kept external data (it may be over protobuf's 2 GB), one side file."""
    import onnx  # 0.6 s to import: conversions only

    for stale in target.parent.glob(f"{target.name}*"):
        if stale != target:
            stale.unlink()
    if external:
        onnx.save_model(
            model,
            str(target),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=EXTERNAL_FILE,
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(target))


# Loads a model file the way the check below needs: in a child process, printing ONNX Runtime's error.
_LOAD_CHILD = """
import sys
import onnxruntime as ort
try:
    ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
except Exception as exc:
    print(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, file=sys.stderr)
    sys.exit(1)
"""


def _check_loadable(folder: Path, where: str) -> None:
    """A conversion ONNX Runtime cannot load is refused now, on the driver, rather than in every actor. The
    load runs in a child process: onnxruntime-gpu 1.31.1 crashed (SIGSEGV) creating a session of the
    text-embedding encoder's fp16 conversion on the H200 host, which would have killed the run's driver."""
    child = subprocess.run(
        [sys.executable, "-c", _LOAD_CHILD, str(folder / MODEL_FILE)], capture_output=True, text=True
    )
    if child.returncode == 0:
        return
    if child.returncode < 0:
        import onnxruntime as ort  # optional: the cpu or gpu extra installs it, and a torch model never needs it

        why = f"ONNX Runtime {ort.__version__} crashed loading it ({signal.Signals(-child.returncode).name})"
    else:
        lines = child.stderr.strip().splitlines()
        why = f"it does not load in ONNX Runtime ({lines[-1] if lines else f'exit {child.returncode}'})"
    raise UsageError(
        f"{where}: the converted model is unusable: {why}; the converter cannot handle this graph: "
        "score it in fp32, or export the model in that precision yourself"
    )


def _provenance(source: Path, sha256: str, precision: str) -> dict[str, str]:
    import onnx  # 0.6 s to import: conversions only
    import onnxruntime as ort  # optional: the cpu or gpu extra installs it, and a torch model never needs it

    return {
        "source": str(source),
        "source_sha256": sha256,
        "precision": precision,
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
    }


_CONVERTERS = {"fp16": _to_fp16, "int8": _to_int8}


def compare(
    model_path: str | Path,
    sha256: str,
    feeds: dict[str, np.ndarray],
    outputs: list[str] | None = None,
    precision: str = "int8",
    external: tuple[str, ...] = (),
    cache_dir: Path | None = None,
    use_gpu: bool = False,
    threads: int = 1,
    repeat: int = 3,
) -> dict[str, Any]:
    """What scoring an ONNX model in `precision` instead of fp32 gains and costs, on one sample (`feeds`):
    rows/s of each (median of `repeat` interleaved timed calls after a warm-up) and their ratio, and the max
    and mean absolute difference of the float outputs. Label agreement is the share of rows whose integer
    outputs are all equal (a classifier's label) or, without one, whose arg-max over a [N, k>1] float output
    agrees; None when the model has neither."""
    model_path = Path(model_path)
    converted = convert(model_path, sha256, precision, external, cache_dir)
    runtimes = {
        "fp32": open_runtime("onnx", ModelFiles.read(model_path, external), ".onnx", [], use_gpu, threads),
        precision: open_runtime(
            "onnx", ModelFiles.read(converted.path, converted.external, precision), ".onnx", [], use_gpu, threads
        ),
    }
    results = {name: rt.run(feeds) for name, rt in runtimes.items()}  # warm-up, and the values compared
    seconds: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(repeat):
        for name, rt in runtimes.items():
            started = time.perf_counter()
            rt.run(feeds)
            seconds[name].append(time.perf_counter() - started)
    rows = len(next(iter(feeds.values())))
    speed = {name: rows / statistics.median(s) for name, s in seconds.items()}
    names = outputs or list(results["fp32"])
    base, reduced = results["fp32"], results[precision]
    floats = [n for n in names if np.issubdtype(base[n].dtype, np.floating)]
    diffs = {n: np.abs(reduced[n].astype(np.float64) - base[n].astype(np.float64)) for n in floats}
    labels, label_output = _label_agreement(names, base, reduced)
    return {
        "precision": precision,
        "rows": rows,
        "device": runtimes[precision].device,
        "fp32_rows_per_s": round(speed["fp32"], 1),
        "rows_per_s": round(speed[precision], 1),
        "speedup": round(speed[precision] / speed["fp32"], 3),
        "max_abs_diff": float(max((d.max() for d in diffs.values() if d.size), default=0.0)),
        "mean_abs_diff": float(np.mean(np.concatenate([d.ravel() for d in diffs.values()]))) if diffs else 0.0,
        "per_output": {
            n: {"max_abs_diff": float(d.max()) if d.size else 0.0, "mean_abs_diff": float(d.mean()) if d.size else 0.0}
            for n, d in diffs.items()
        },
        "label_agreement": labels,
        "label_output": label_output,
    }


def _label_agreement(
    names: list[str], base: dict[str, np.ndarray], reduced: dict[str, np.ndarray]
) -> tuple[float | None, str | None]:
    for name in names:
        if np.issubdtype(base[name].dtype, np.integer) or base[name].dtype == bool:
            same = (base[name] == reduced[name]).reshape(len(base[name]), -1).all(axis=1)
            return float(same.mean()), name
    for name in names:
        if np.issubdtype(base[name].dtype, np.floating) and base[name].ndim == 2 and base[name].shape[1] > 1:
            return float((base[name].argmax(1) == reduced[name].argmax(1)).mean()), f"argmax({name})"
    return None, None
