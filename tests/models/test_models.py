"""Model resolution (files and the MLflow registry), signatures, binding to columns, pool sizing."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.engines.pool import size_pool
from jobs.errors import UsageError
from jobs.models.artifacts import bind_model
from jobs.spec.load import load_tracking
from jobs.spec.schema import ModelSpec, ScoringSpec
from jobs.tracking.registry import register_model, resolve_model
from tests.conftest import LAST_DAY


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def exported_program(tmp_path):
    import torch

    class TwoInputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, 2)

        def forward(self, features: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.linear(features) + bias.unsqueeze(1), dim=1)

    batch = torch.export.Dim("batch")
    program = torch.export.export(
        TwoInputs().eval(), (torch.zeros(4, 3), torch.zeros(4)), dynamic_shapes=({0: batch}, {0: batch})
    )
    path = tmp_path / "two_inputs.pt2"
    torch.export.save(program, str(path))
    return path


SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.float64()), ("c", pa.bool_()), ("name", pa.string())])


def test_exported_program_signature_and_binding(exported_program, project):
    spec = ModelSpec(
        uri=str(exported_program), inputs={"features": ["a", "b", "c"], "bias": "b"}, outputs={"out": ["p_no", "p_yes"]}
    )
    model = resolve_model(spec, load_tracking(project.root, environ=project.env))
    assert model.runtime == "torch" and model.sha256 == sha256(exported_program)
    assert [(t.name, t.dtype, t.shape) for t in model.inputs] == [
        ("features", "float32", (None, 3)),
        ("bias", "float32", (None,)),
    ]
    binding = bind_model(model, spec, SCHEMA, "input")
    assert [f.name for f in binding.output_fields()] == ["p_no", "p_yes"]
    assert binding.input_columns == ["a", "b", "c"]


def test_exported_program_rejects_wrong_width(exported_program, project):
    spec = ModelSpec(uri=str(exported_program), inputs={"features": ["a", "b"], "bias": "b"}, outputs={"out": "p"})
    with pytest.raises(
        UsageError, match=r"rejects a probe of inputs shaped from model.inputs \(features float32\[3, 2\]"
    ):
        resolve_model(spec, load_tracking(project.root, environ=project.env))


def test_onnx_width_and_type_checks(project):
    spec = ModelSpec(
        uri=str(project.models / "model.onnx"), inputs={"tenure_months": ["a", "b"]}, outputs={"label": "y"}
    )
    model = resolve_model(spec, load_tracking(project.root, environ=project.env))
    with pytest.raises(UsageError, match="'tenure_months' takes 1 column"):
        bind_model(model, spec, SCHEMA, "input")


def test_float_column_into_int_input_is_refused():
    from jobs.models.artifacts import _cast_problem

    assert "truncate" in _cast_problem(pa.float64(), "int64")
    assert _cast_problem(pa.int32(), "float32") is None
    assert _cast_problem(pa.dictionary(pa.int32(), pa.string()), "string") is None


def test_registry_alias_and_version_resolve_to_one_hashed_file(project, tmp_path):
    from jobs.tracking.connect import connect

    tracking = load_tracking(project.root, environ=project.env).model_copy(
        update={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_location": (tmp_path / "art").as_uri()}
    )
    onnx_file, torch_file = project.models / "model.onnx", project.models / "model_torchscript.pt"
    assert register_model(onnx_file, "churn_reg", "champion", tracking) == "1"
    assert register_model(onnx_file, "churn_reg", "champion", tracking) == "1"  # same bytes: same version

    outputs = {"label": "y"}
    by_alias = resolve_model(ModelSpec(uri="models:/churn_reg@champion", outputs=outputs), tracking)
    by_version = resolve_model(ModelSpec(uri="models:/churn_reg/1", outputs=outputs), tracking)
    assert by_alias.version == by_version.version == "1"
    assert by_alias.sha256 == by_version.sha256 == sha256(onnx_file)
    assert by_alias.registry_name == "churn_reg"

    assert register_model(torch_file, "churn_reg", "champion", tracking) == "2"
    moved = resolve_model(
        ModelSpec(
            uri="models:/churn_reg@champion", runtime="torch", inputs={"features": ["x"] * 23}, outputs={"o": "p"}
        ),
        tracking,
    )
    assert moved.version == "2" and moved.sha256 == sha256(torch_file)
    assert str(connect(tracking).get_model_version_by_alias("churn_reg", "champion").version) == "2"

    with pytest.raises(UsageError, match="models:/churn_reg/7: not found in the registry"):
        resolve_model(ModelSpec(uri="models:/churn_reg/7", outputs=outputs), tracking)


EXTERNAL_FEATURES = ["tenure_months", "monthly_charges", "credit_score", "age"]


def tiny_onnx(path, scale: float = 2.0):
    """A one-node ONNX model (y = x * scale), all in one file: other valid bytes to swap in."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(np.array([scale], np.float32), "scale")],
    )
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def external_model(tmp_path):
    """features [N, 4] -> MatMul -> Sigmoid -> MatMul (+ the mean of a 1 MB initializer) -> Sigmoid, with
    every initializer in the side file `weights.bin`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    initializers = {
        "w1": rng.normal(size=(4, 64)).astype(np.float32) / 100,
        "w2": rng.normal(size=(64, 1)).astype(np.float32),
        "big": rng.uniform(0, 1, 262_144).astype(np.float32),
    }
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w1"], ["h"]),
            helper.make_node("Sigmoid", ["h"], ["hs"]),
            helper.make_node("MatMul", ["hs", "w2"], ["z"]),
            helper.make_node("ReduceMean", ["big"], ["offset"], keepdims=0),
            helper.make_node("Add", ["z", "offset"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["score"]),
        ],
        "external",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    path = tmp_path / "external" / "scorer.onnx"
    path.parent.mkdir()
    onnx.save_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        str(path),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["scorer.onnx", "weights.bin"]
    assert (path.parent / "weights.bin").stat().st_size > 1_000_000
    return path


def external_sha256(path) -> str:
    """The lineage hash of a model with one side file, computed independently of jobs.models.artifacts."""
    return hashlib.sha256(f"{sha256(path)}\n{sha256(path.parent / 'weights.bin')}  weights.bin".encode()).hexdigest()


def isolated_tracking(project, tmp_path):
    return load_tracking(project.root, environ=project.env).model_copy(
        update={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_location": (tmp_path / "art").as_uri()}
    )


def artifact_folder(tracking, name: str, version: str):
    """Where the registry version's files live in the artifact store (the registering run's artifacts)."""
    from jobs.tracking.connect import connect

    client = connect(tracking)
    run = client.get_run(client.get_model_version(name, version).run_id)
    return Path(unquote(urlparse(run.info.artifact_uri).path)) / "model"


def test_registry_refuses_a_version_whose_file_changed_since_registration(project, tmp_path):
    """Guards model integrity: a registry version whose downloaded file no longer has the sha256 recorded at
    registration (the artifact store was overwritten) is refused with a UsageError naming the URI, the
    version, both hashes and the fix, before anything is scored. A version without a sha256 tag (registered
    by another tool) cannot be checked: it is accepted and the downloaded file's sha256 is recorded."""
    from jobs.tracking.connect import connect

    tracking = isolated_tracking(project, tmp_path)
    original = project.models / "model.onnx"
    assert register_model(original, "churn_guarded", "champion", tracking) == "1"
    stored = artifact_folder(tracking, "churn_guarded", "1") / "model.onnx"
    assert sha256(stored) == sha256(original)
    tiny_onnx(stored)
    spec = ModelSpec(uri="models:/churn_guarded@champion", outputs={"y": "p"})
    with pytest.raises(UsageError) as refused:
        resolve_model(spec, tracking)
    message = str(refused.value)
    assert refused.value.exit_code == 2
    for part in ("models:/churn_guarded@champion", "version 1", sha256(original), sha256(stored), "register-model"):
        assert part in message

    client = connect(tracking)
    first = client.get_model_version("churn_guarded", "1")
    untagged = client.create_model_version("churn_guarded", source=first.source, run_id=first.run_id)
    accepted = resolve_model(ModelSpec(uri=f"models:/churn_guarded/{untagged.version}", outputs={"y": "p"}), tracking)
    assert accepted.version == "2" and accepted.sha256 == sha256(stored)


def test_onnx_external_data_is_hashed_registered_and_checked(external_model, project, tmp_path):
    """Guards ONNX models with external data at plan time: the recorded sha256 covers the side file (a plain
    file keeps its plain sha256), register_model uploads the side file next to the .onnx, a missing side file
    is refused by name (locally, at registration and in the registry), and a registry side file changed
    after registration is refused like a changed model file."""
    from jobs.plan.plan import make_plan
    from jobs.spec.load import load_spec

    tracking = isolated_tracking(project, tmp_path)
    spec = ModelSpec(uri=str(external_model), inputs={"features": EXTERNAL_FEATURES}, outputs={"score": "p"})
    local = resolve_model(spec, tracking)
    assert local.external == ("weights.bin",) and local.sha256 == external_sha256(external_model)
    assert resolve_model(
        ModelSpec(uri=str(project.models / "model.onnx"), outputs={"label": "y"}), tracking
    ).sha256 == sha256(project.models / "model.onnx")

    assert register_model(external_model, "ext", "champion", tracking) == "1"
    stored = artifact_folder(tracking, "ext", "1")
    assert sorted(p.name for p in stored.iterdir()) == ["scorer.onnx", "weights.bin"]
    registry_spec = spec.model_copy(update={"uri": "models:/ext@champion"})
    from_registry = resolve_model(registry_spec, tracking)
    assert (from_registry.version, from_registry.sha256) == ("1", local.sha256)
    assert from_registry.external == ("weights.bin",)

    lonely = tmp_path / "lonely" / "scorer.onnx"
    lonely.parent.mkdir()
    shutil.copy(external_model, lonely)
    with pytest.raises(UsageError, match=r"external data file 'weights.bin', which is missing"):
        resolve_model(spec.model_copy(update={"uri": str(lonely)}), tracking)
    with pytest.raises(UsageError, match=r"'weights.bin', which is missing"):
        register_model(lonely, "ext", None, tracking)
    job = project.job(
        "external_missing",
        contract=None,
        model__uri=str(lonely),
        model__runtime="onnx",
        model__inputs={"features": EXTERNAL_FEATURES},
        model__outputs={"score": "p"},
    )
    with pytest.raises(UsageError, match=r"'weights.bin', which is missing"):
        make_plan(load_spec(job, environ=project.env), None)

    weights = stored / "weights.bin"
    weights.write_bytes(weights.read_bytes()[::-1])
    with pytest.raises(UsageError, match=rf"version 1 of 'ext' is not the model that was registered: .*{local.sha256}"):
        resolve_model(registry_spec, tracking)
    weights.unlink()
    with pytest.raises(UsageError, match=r"models:/ext@champion \(version 1\): scorer.onnx keeps .*'weights.bin'"):
        resolve_model(registry_spec, tracking)


def test_external_data_locations_are_found_in_attributes_and_subgraphs(tmp_path):
    """Guards the listing of side files: tensors in node attributes and in an If branch count too, and a
    plain file has none (found without importing onnx, 0.6 s of every plan)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from jobs.models.artifacts import _onnx_external_locations

    def constant(name: str, value: float):
        tensor = numpy_helper.from_array(np.full(300, value, np.float32), f"{name}_value")
        return helper.make_node("Constant", [], [name], value=tensor)

    branch = lambda name, value: helper.make_graph(  # noqa: E731
        [constant(name, value)], name, [], [helper.make_tensor_value_info(name, TensorProto.FLOAT, [300])]
    )
    graph = helper.make_graph(
        [
            constant("c", 1.0),
            helper.make_node("If", ["cond"], ["picked"], then_branch=branch("t", 2.0), else_branch=branch("e", 3.0)),
            helper.make_node("Add", ["c", "picked"], ["out"]),
        ],
        "walk",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [300])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    plain = tmp_path / "plain.onnx"
    onnx.save_model(model, str(plain))
    assert _onnx_external_locations(plain) == set()

    probe = (
        f"import sys; from pathlib import Path; from jobs.models.artifacts import external_data; "
        f"print(external_data(Path({str(plain)!r}), 'model'), 'onnx' in sys.modules)"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert found.split() == ["()", "False"]  # a plain model is told apart from its bytes, without importing onnx
    model.graph.node[0].name = "location"  # the word in a plain model's bytes: parsed, still no side file
    onnx.save_model(model, str(plain))
    assert b"location" in plain.read_bytes() and _onnx_external_locations(plain) == set()

    onnx.convert_model_to_external_data(model, all_tensors_to_one_file=False, size_threshold=0, convert_attribute=True)
    onnx.save_model(model, str(tmp_path / "split.onnx"))
    assert _onnx_external_locations(tmp_path / "split.onnx") == {"c_value", "t_value", "e_value"}


def test_onnx_external_data_scores_end_to_end_from_path_and_registry(fresh_project, external_model):
    """Guards ONNX models with external data on the actors: the driver ships the side file with the model,
    so a job scores from a local path and from the registry, and its scores equal onnxruntime called
    directly (by path) on the same rows."""
    import onnxruntime as ort
    from deltalake import DeltaTable

    project = fresh_project
    tracking = load_tracking(project.root, environ=project.env)
    assert register_model(external_model, "ext_e2e", "champion", tracking) == "1"
    rows = pq.read_table(project.data / f"ds={LAST_DAY.isoformat()}").sort_by("customer_id")
    features = np.stack([rows.column(c).to_numpy().astype(np.float32) for c in EXTERNAL_FEATURES], axis=1)
    session = ort.InferenceSession(str(external_model), providers=["CPUExecutionProvider"])
    expected = session.run(["score"], {"features": features})[0][:, 0]

    for name, uri in (("external_local", str(external_model)), ("external_registry", "models:/ext_e2e@champion")):
        job = project.job(
            name,
            contract=None,
            model__uri=uri,
            model__runtime="onnx",
            model__inputs={"features": EXTERNAL_FEATURES},
            model__outputs={"score": "p"},
        )
        code, summary = project.run(job)
        assert code == 0, summary["error"]
        assert summary["model_sha256"] == external_sha256(external_model)
        table = DeltaTable(summary["table_uri"]).to_pyarrow_table().sort_by("customer_id")
        assert table.column("customer_id").equals(rows.column("customer_id"))
        np.testing.assert_allclose(table.column("p").to_numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "cpus, gpus, wanted, expected",
    [
        (2, 0, dict(actors={"min": 1, "max": 4}), (1, 1, 1.0, 0.0)),  # leave one CPU for reads
        (16, 0, dict(actors={"min": 2, "max": 4}), (2, 4, 1.0, 0.0)),
        (16, 0, dict(actors={"min": 1, "max": 8}, cpus_per_actor=4), (1, 3, 4.0, 0.0)),
        (1, 0, dict(actors={"min": 1, "max": 4}), (1, 1, 0.5, 0.0)),  # one CPU: share it
        (16, 1, dict(actors={"min": 1, "max": 4}, gpus_per_actor=1), (1, 1, 1.0, 1.0)),
        (16, 4, dict(actors={"min": 1, "max": 8}, gpus_per_actor=0.5), (1, 8, 1.0, 0.5)),
    ],
)
def test_pool_is_sized_from_cluster_resources(cpus, gpus, wanted, expected):
    node = {"Alive": True, "NodeManagerAddress": "127.0.0.1", "Resources": {"CPU": cpus, "GPU": gpus}}
    size = size_pool(ScoringSpec(**wanted), [node])
    assert (size.min_actors, size.max_actors, size.cpus_per_actor, size.gpus_per_actor) == expected
    assert size.max_actors * size.cpus_per_actor < cpus or cpus == 1


def test_gpu_job_on_a_cpu_cluster_is_a_usage_error():
    node = {"Alive": True, "NodeManagerAddress": "127.0.0.1", "Resources": {"CPU": 8}}
    with pytest.raises(UsageError, match="gpus_per_actor is 1 but the Ray cluster has no GPUs"):
        size_pool(ScoringSpec(gpus_per_actor=1), [node])


def test_model_files_reach_a_worker_as_views_of_the_shared_copy(external_model):
    """Guards big models on many actors: the model and its external data travel as arrays, which a Ray
    process receives as read-only views of its node's one object-store copy, not as a private copy each
    (measured with a 192 MB external-data model: 393 MB -> 201 MB private memory per actor while loading).
    A session opened from those views scores like onnxruntime reading the files itself."""
    import onnxruntime as ort
    import ray

    from jobs.engines import cluster
    from jobs.models.runtimes import ModelFiles, open_runtime
    from jobs.spec.schema import EngineSpec

    cluster.start(EngineSpec(ray_address="local"))
    external = tuple(p.name for p in external_model.parent.iterdir() if p.name != external_model.name)
    assert external, "the fixture model must have external data"
    files = ray.get(ray.put(ModelFiles.read(external_model, external)))
    for array in (files.model, *(a for _, a in files.external)):
        assert not array.flags.writeable and not array.flags.owndata  # a view of shared memory
    features = np.random.default_rng(7).random((64, len(EXTERNAL_FEATURES)), dtype=np.float32)
    got = open_runtime("onnx", files, ".onnx", ["score"], False, 1).run({"features": features})["score"]
    expected = ort.InferenceSession(str(external_model), providers=["CPUExecutionProvider"]).run(
        ["score"], {"features": features}
    )[0]
    np.testing.assert_array_equal(got, expected)
