"""scoring.precision: ONNX fp16/int8 conversions made once and cached, their scores against fp32, torch
autocast end to end, and an actor given a GPU that refuses a CPU-only runtime.

Tolerances, on an MLP 32-64-2 whose softmax probabilities are compared:
- fp16 keeps 11 significant bits (relative rounding 2^-11, about 5e-4) on weights and activations, and
  ONNX Runtime accumulates in float32: the probabilities move by a few 1e-4 (measured 2.5e-4 on a wider
  net); 2e-3 leaves room without hiding a wrong conversion (a weight dropped moves them by 0.1).
- int8 dynamic quantization rounds each weight to 1/255 of its tensor's range and each activation batch
  likewise: errors of about 1% of a logit's scale, so probabilities move by up to a few 1e-2 (measured
  0.017 max); 0.06 max, 0.01 mean and 97% equal labels.
- bf16 autocast keeps 8 significant bits (relative rounding 2^-9, 0.2%) on the inputs of each matrix
  product: the demo MLP's churn probability moved by up to 0.015 (measured on 2,000 rows); 0.04 max,
  0.005 mean. The bf16 scores must also differ from fp32 somewhere, or autocast did not happen.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from jobs.errors import SpecError, UsageError
from jobs.models.precision import EXTERNAL_FILE, cache_folder, compare, convert
from jobs.models.runtimes import GpuUnavailableError, ModelFiles, OnnxRuntime, TorchRuntime, open_runtime
from jobs.tools import synthetic
from tests.conftest import DAYS, ROWS_PER_DAY

FEATURES = 32


def _mlp(path, external: bool = False):
    """An MLP 32-64-2 with softmax probabilities and an arg-max label, built with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.normal(0, 1 / np.sqrt(FEATURES), (FEATURES, 64)),
        "b1": rng.normal(0, 0.1, 64),
        "w2": rng.normal(0, 1 / 8, (64, 2)),
        "b2": np.zeros(2),
    }
    nodes = [
        helper.make_node("MatMul", ["features", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["o"]),
        helper.make_node("Add", ["o", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, FEATURES])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
        ],
        [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, location=f"{path.name}.weights", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


def _sha256(path) -> str:
    from jobs.models.artifacts import model_sha256

    external = (f"{path.name}.weights",) if (path.parent / f"{path.name}.weights").exists() else ()
    return model_sha256(path, external)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    return _mlp(tmp_path_factory.mktemp("mlp") / "mlp.onnx")


@pytest.fixture(scope="module")
def sample():
    return {"features": np.random.default_rng(1).normal(size=(4_000, FEATURES)).astype(np.float32)}


def _scores(path, feeds, external=()):
    runtime = open_runtime("onnx", ModelFiles.read(path, external), ".onnx", [], use_gpu=False, threads=1)
    return runtime.run(feeds)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_conversion_is_made_once_and_cached_by_sha256(mlp, tmp_path, precision):
    cache = tmp_path / "cache"
    first = convert(mlp, _sha256(mlp), precision, cache_dir=cache)
    stat = first.path.stat()
    again = convert(mlp, _sha256(mlp), precision, cache_dir=cache)
    assert again == first
    assert (again.path.stat().st_ino, again.path.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert first.path.parent.name == f"{_sha256(mlp)}-{precision}"
    # Another model (another sha256) gets its own entry; nothing half-written is left behind.
    other = convert(mlp, "0" * 64, precision, cache_dir=cache)
    assert other.path != first.path
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == sorted(
        [first.path.parent.name, other.path.parent.name]
    )


def test_fp16_and_int8_scores_close_to_fp32(mlp, sample, tmp_path):
    base = _scores(mlp, sample)
    half = _scores(convert(mlp, _sha256(mlp), "fp16", cache_dir=tmp_path).path, sample)
    assert half["probabilities"].dtype == np.float32  # keep_io_types: the plan's bindings still hold
    np.testing.assert_allclose(half["probabilities"], base["probabilities"], atol=2e-3)
    assert not np.array_equal(half["probabilities"], base["probabilities"])  # it really is float16 inside
    quantized = _scores(convert(mlp, _sha256(mlp), "int8", cache_dir=tmp_path).path, sample)
    diff = np.abs(quantized["probabilities"] - base["probabilities"])
    assert 0 < diff.max() <= 0.06 and diff.mean() <= 0.01
    assert (quantized["label"] == base["label"]).mean() >= 0.97


def test_compare_reports_the_differences_of_the_models_called_directly(mlp, sample, tmp_path):
    report = compare(mlp, _sha256(mlp), sample, precision="int8", cache_dir=tmp_path, repeat=2)
    base = _scores(mlp, sample)
    quantized = _scores(convert(mlp, _sha256(mlp), "int8", cache_dir=tmp_path).path, sample)
    diff = np.abs(quantized["probabilities"].astype(np.float64) - base["probabilities"])
    assert report["rows"] == len(sample["features"])
    np.testing.assert_allclose([report["max_abs_diff"], report["mean_abs_diff"]], [diff.max(), diff.mean()], rtol=1e-9)
    assert report["label_output"] == "label"
    assert report["label_agreement"] == pytest.approx((quantized["label"] == base["label"]).mean())
    assert report["fp32_rows_per_s"] > 0 and report["rows_per_s"] > 0 and report["speedup"] > 0
    assert report["device"] == "cpu"


def test_a_model_with_external_data_converts(tmp_path, sample):
    (tmp_path / "ext").mkdir()
    source = _mlp(tmp_path / "ext" / "mlp.onnx", external=True)
    base = _scores(source, sample, (f"{source.name}.weights",))
    for precision, atol in (("fp16", 2e-3), ("int8", 0.06)):
        converted = convert(source, _sha256(source), precision, (f"{source.name}.weights",), tmp_path / "cache")
        assert converted.external == (EXTERNAL_FILE,)
        got = _scores(converted.path, sample, converted.external)
        np.testing.assert_allclose(got["probabilities"], base["probabilities"], atol=atol)


@pytest.mark.parametrize("external", [False, True])
def test_conversions_write_nothing_beside_the_model(tmp_path, external):
    """The README promises that nothing is written next to a model's files (its folder may be read-only):
    ONNX Runtime's quantizer writes `<model>-inferred.onnx` beside the path it is given, then deletes it, which
    changes the folder's modification time."""
    folder = tmp_path / "models"
    folder.mkdir()
    source = _mlp(folder / "mlp.onnx", external=external)
    names = (f"{source.name}.weights",) if external else ()
    before = sorted(p.name for p in folder.iterdir()), folder.stat().st_mtime_ns
    for precision in ("fp16", "int8"):
        convert(source, _sha256(source), precision, names, tmp_path / "cache")
    assert (sorted(p.name for p in folder.iterdir()), folder.stat().st_mtime_ns) == before
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()) == [
        f"{_sha256(source)}-fp16",
        f"{_sha256(source)}-int8",
    ]


def _convert_in_child(args):
    source, sha256, cache = args
    converted = convert(source, sha256, "int8", cache_dir=cache)
    return str(converted.path), converted.path.stat().st_ino


def test_runs_converting_at_once_share_one_conversion(mlp, tmp_path):
    cache = tmp_path / "cache"
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(3, mp_context=context) as pool:
        results = list(pool.map(_convert_in_child, [(mlp, _sha256(mlp), cache)] * 3))
    assert len(set(results)) == 1
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [f"{_sha256(mlp)}-int8"]  # no staging left


def test_io_binding_scores_as_session_run(mlp, sample, models_dir):
    """The GPU path's IO binding, exercised on the CPU device; a model with string inputs (which ORT cannot
    bind) runs through session.run instead."""
    runtime = OnnxRuntime(ModelFiles.read(mlp), use_gpu=False, threads=1)
    plain = runtime.run(sample)
    runtime.bind_device = ("cpu", 0)
    bound = runtime.run(sample)
    assert runtime.bindable and set(bound) == {"probabilities", "label"}
    for name in plain:
        np.testing.assert_array_equal(bound[name], plain[name])
    assert not OnnxRuntime(ModelFiles.read(models_dir / "model.onnx"), use_gpu=False, threads=1).bindable


def test_an_actor_with_a_gpu_refuses_a_cpu_only_runtime(mlp, models_dir):
    import onnxruntime as ort
    import torch

    if "CUDAExecutionProvider" in ort.get_available_providers() or torch.cuda.is_available():
        pytest.skip("a GPU build is installed here")
    with pytest.raises(GpuUnavailableError, match=r"onnxruntime .* CPU-only build .*make install ACCEL=gpu"):
        open_runtime("onnx", ModelFiles.read(mlp), ".onnx", [], use_gpu=True, threads=1)
    with pytest.raises(GpuUnavailableError, match=r"torch .*cuda.is_available\(\) is False.*make install ACCEL=gpu"):
        open_runtime("torch", ModelFiles.read(models_dir / "model_torchscript.pt"), ".pt", ["out"], True, 1)


def test_torch_fp16_autocast_on_cpu_returns_float32(models_dir):
    import torch

    x = synthetic.customers(2_000, DAYS[0], seed=5)
    feeds = {
        "features": np.stack(
            [x.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in synthetic.NUMERIC_FEATURES], axis=1
        )
    }
    model = (models_dir / "model_torchscript.pt").read_bytes()
    fp32 = TorchRuntime(model, ".pt", ["out"], use_gpu=False, threads=1).run(feeds)["out"]
    fp16 = TorchRuntime(model, ".pt", ["out"], use_gpu=False, threads=1, precision="fp16").run(feeds)["out"]
    assert fp16.dtype == np.float32 and fp16.shape == fp32.shape
    with torch.no_grad():
        direct = torch.jit.load(str(models_dir / "model_torchscript.pt"))(torch.from_numpy(feeds["features"])).numpy()
    np.testing.assert_allclose(fp32, direct, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fp16, direct, atol=0.04)
    assert not np.array_equal(fp16, direct)


def _torch_job(project, name, precision):
    return project.job(
        name,
        model={
            "uri": str(project.models / "model_torchscript.pt"),
            "runtime": "torch",
            "inputs": {"features": synthetic.NUMERIC_FEATURES},
            "outputs": {"out": "churn_probability"},
        },
        scoring__precision=precision,
    )


def test_torch_bf16_job_end_to_end(fresh_project):
    import mlflow
    import torch

    project = fresh_project
    code, summary = project.run(_torch_job(project, "churn_bf16", "bf16"))
    assert code == 0, summary["error"]
    assert summary["rows_scored"] == ROWS_PER_DAY

    source = pq.read_table(project.data / f"ds={DAYS[-1].isoformat()}").sort_by("customer_id")
    x = np.stack(
        [source.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in synthetic.NUMERIC_FEATURES], axis=1
    )
    with torch.no_grad():
        expected = torch.jit.load(str(project.models / "model_torchscript.pt"))(torch.from_numpy(x)).numpy()[:, 0]
    got = DeltaTable(summary["table_uri"]).to_pyarrow_table().sort_by("customer_id")
    assert got.column("customer_id").equals(source.column("customer_id"))
    scores = got.column("churn_probability").to_numpy()
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, atol=0.04)
    assert np.abs(scores - expected).mean() <= 0.005
    assert not np.array_equal(scores, expected)  # bf16 really was used

    mlflow.set_tracking_uri(project.tracking_uri)
    run = mlflow.get_run(summary["run_id"])
    assert run.data.params["precision"] == "bf16"
    assert run.data.tags["score.model_sha256"] == summary["model_sha256"]


def test_onnx_int8_plan_scores_the_cached_conversion(fresh_project, mlp):
    """The plan swaps in the converted model (once: the second plan finds it) and keeps the source's sha256."""
    from jobs.models.artifacts import model_sha256
    from jobs.plan.plan import make_plan
    from jobs.spec.load import load_spec

    project = fresh_project
    job = project.job("churn_int8", scoring__precision="int8")
    with project.environment():
        plan = make_plan(load_spec(job))
        again = make_plan(load_spec(job))
    source = project.models / "model.onnx"
    assert plan.model.sha256 == model_sha256(source, ()) and plan.model.path == str(source)
    assert plan.model.precision == "int8"
    assert plan.model.converted_path == str(cache_folder(project.root) / f"{plan.model.sha256}-int8" / "model.onnx")
    assert os.stat(again.model.converted_path).st_mtime_ns == os.stat(plan.model.converted_path).st_mtime_ns
    files = plan.model.files()
    assert files.precision == "int8" and files.model.tobytes() == open(plan.model.converted_path, "rb").read()


@pytest.mark.parametrize(
    "precision, runtime, message",
    [
        ("int8", "torch", r"scoring.precision: int8 is for ONNX models .* runs in torch: use fp16 or bf16"),
        ("bf16", "onnx", r"scoring.precision: bf16 is for torch models .* use fp16 for an ONNX model"),
    ],
)
def test_a_precision_the_runtime_cannot_do_is_refused(project, precision, runtime, message):
    job = (
        _torch_job(project, f"bad_{precision}", precision)
        if runtime == "torch"
        else project.job(f"bad_{precision}", scoring__precision=precision)
    )
    code, summary = project.run(job)
    assert code == UsageError.exit_code
    assert re.search(message, summary["error"]), summary["error"]


def test_an_unknown_precision_names_the_key_and_the_choices(project):
    from jobs.spec.load import load_spec

    with pytest.raises(SpecError, match=r"scoring.precision.*'fp32', 'fp16', 'bf16' or 'int8'"):
        load_spec(project.job("bad_precision"), overrides=["scoring.precision=fp8"])


def test_a_conversion_onnx_runtime_cannot_load_is_refused_at_plan_time(models_dir, tmp_path):
    """The float16 converter breaks the demo's scikit-learn graph (a Concat of float and float16 inputs): the
    plan says so, and leaves nothing in the cache."""
    from jobs.models.precision import with_precision
    from jobs.spec.schema import ModelSpec, TrackingSpec
    from jobs.tracking.registry import resolve_model

    spec = ModelSpec(uri=str(models_dir / "model.onnx"), outputs={"label": "churn_label"})
    artifact = resolve_model(spec, TrackingSpec(uri="sqlite:///unused.db", artifact_location="unused"))
    with pytest.raises(
        UsageError,
        match=r"job.yaml: scoring.precision fp16 .*unusable: it does not load in ONNX Runtime.*"
        r"score it in fp32",
    ):
        with_precision(artifact, "fp16", tmp_path, where="job.yaml: scoring.precision")
    assert [p for p in cache_folder(tmp_path).iterdir() if p.is_dir()] == []


def test_a_conversion_that_crashes_onnx_runtime_is_refused_not_fatal(models_dir, tmp_path, monkeypatch):
    """onnxruntime-gpu crashed (SIGSEGV) loading an fp16 conversion on the GPU host: the check's child process
    dies instead of the run's driver, and the message names the signal. The crash is injected for real: the
    child kills itself with SIGSEGV."""
    from jobs.models import precision
    from jobs.spec.schema import ModelSpec, TrackingSpec
    from jobs.tracking.registry import resolve_model

    monkeypatch.setattr(precision, "_LOAD_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    spec = ModelSpec(uri=str(models_dir / "model.onnx"), outputs={"label": "churn_label"})
    artifact = resolve_model(spec, TrackingSpec(uri="sqlite:///unused.db", artifact_location="unused"))
    with pytest.raises(
        UsageError,
        match=r"scoring.precision int8 .*unusable: ONNX Runtime \S+ crashed loading it "
        r"\(SIGSEGV\).*score it in fp32",
    ):
        precision.with_precision(artifact, "int8", tmp_path, where="job.yaml: scoring.precision")
    assert [p for p in cache_folder(tmp_path).iterdir() if p.is_dir()] == []
