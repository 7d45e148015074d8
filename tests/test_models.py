"""Model resolution (files and the MLflow registry), signatures, binding to columns, pool sizing."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from jobs.engine import size_pool
from jobs.errors import UsageError
from jobs.models import bind_model, register_model, resolve_model
from jobs.spec import ModelSpec, ScoringSpec, load_tracking


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
    program = torch.export.export(TwoInputs().eval(), (torch.zeros(4, 3), torch.zeros(4)),
                                  dynamic_shapes=({0: batch}, {0: batch}))
    path = tmp_path / "two_inputs.pt2"
    torch.export.save(program, str(path))
    return path


SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.float64()), ("c", pa.bool_()), ("name", pa.string())])


def test_exported_program_signature_and_binding(exported_program, project):
    spec = ModelSpec(uri=str(exported_program), inputs={"features": ["a", "b", "c"], "bias": "b"},
                     outputs={"out": ["p_no", "p_yes"]})
    model = resolve_model(spec, load_tracking(project.root, environ=project.env))
    assert model.runtime == "torch" and model.sha256 == sha256(exported_program)
    assert [(t.name, t.dtype, t.shape) for t in model.inputs] == [("features", "float32", (None, 3)),
                                                                  ("bias", "float32", (None,))]
    binding = bind_model(model, spec, SCHEMA, "input")
    assert [f.name for f in binding.output_fields()] == ["p_no", "p_yes"]
    assert binding.input_columns == ["a", "b", "c"]


def test_exported_program_rejects_wrong_width(exported_program, project):
    spec = ModelSpec(uri=str(exported_program), inputs={"features": ["a", "b"], "bias": "b"}, outputs={"out": "p"})
    with pytest.raises(UsageError, match="rejects inputs shaped from model.inputs"):
        resolve_model(spec, load_tracking(project.root, environ=project.env))


def test_onnx_width_and_type_checks(project):
    spec = ModelSpec(uri=str(project.models / "model.onnx"), inputs={"tenure_months": ["a", "b"]},
                     outputs={"label": "y"})
    model = resolve_model(spec, load_tracking(project.root, environ=project.env))
    with pytest.raises(UsageError, match="'tenure_months' takes 1 column"):
        bind_model(model, spec, SCHEMA, "input")


def test_float_column_into_int_input_is_refused():
    from jobs.models import _cast_problem

    assert "truncate" in _cast_problem(pa.float64(), "int64")
    assert _cast_problem(pa.int32(), "float32") is None
    assert _cast_problem(pa.dictionary(pa.int32(), pa.string()), "string") is None


def test_registry_alias_and_version_resolve_to_one_hashed_file(project, tmp_path):
    from jobs.tracking import connect

    tracking = load_tracking(project.root, environ=project.env).model_copy(
        update={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_location": (tmp_path / "art").as_uri()})
    onnx_file, torch_file = project.models / "model.onnx", project.models / "model_torchscript.pt"
    assert register_model(onnx_file, "churn_reg", "champion", tracking) == "1"
    assert register_model(onnx_file, "churn_reg", "champion", tracking) == "1"      # same bytes: same version

    outputs = {"label": "y"}
    by_alias = resolve_model(ModelSpec(uri="models:/churn_reg@champion", outputs=outputs), tracking)
    by_version = resolve_model(ModelSpec(uri="models:/churn_reg/1", outputs=outputs), tracking)
    assert by_alias.version == by_version.version == "1"
    assert by_alias.sha256 == by_version.sha256 == sha256(onnx_file)
    assert by_alias.registry_name == "churn_reg"

    assert register_model(torch_file, "churn_reg", "champion", tracking) == "2"
    moved = resolve_model(ModelSpec(uri="models:/churn_reg@champion", runtime="torch",
                                    inputs={"features": ["x"] * 23}, outputs={"o": "p"}), tracking)
    assert moved.version == "2" and moved.sha256 == sha256(torch_file)
    assert str(connect(tracking).get_model_version_by_alias("churn_reg", "champion").version) == "2"

    with pytest.raises(UsageError, match="models:/churn_reg/7: not found in the registry"):
        resolve_model(ModelSpec(uri="models:/churn_reg/7", outputs=outputs), tracking)


@pytest.mark.parametrize("cpus, gpus, wanted, expected", [
    (2, 0, dict(actors={"min": 1, "max": 4}), (1, 1, 1.0, 0.0)),          # leave one CPU for reads
    (16, 0, dict(actors={"min": 2, "max": 4}), (2, 4, 1.0, 0.0)),
    (16, 0, dict(actors={"min": 1, "max": 8}, cpus_per_actor=4), (1, 3, 4.0, 0.0)),
    (1, 0, dict(actors={"min": 1, "max": 4}), (1, 1, 0.5, 0.0)),          # one CPU: share it
    (16, 1, dict(actors={"min": 1, "max": 4}, gpus_per_actor=1), (1, 1, 1.0, 1.0)),
    (16, 4, dict(actors={"min": 1, "max": 8}, gpus_per_actor=0.5), (1, 8, 1.0, 0.5)),
])
def test_pool_is_sized_from_cluster_resources(cpus, gpus, wanted, expected):
    size = size_pool(ScoringSpec(**wanted), {"CPU": cpus, "GPU": gpus})
    assert (size.min_actors, size.max_actors, size.cpus_per_actor, size.gpus_per_actor) == expected
    assert size.max_actors * size.cpus_per_actor < cpus or cpus == 1


def test_gpu_job_on_a_cpu_cluster_is_a_usage_error():
    with pytest.raises(UsageError, match="gpus_per_actor is 1.0 but the Ray cluster has 0 GPUs"):
        size_pool(ScoringSpec(gpus_per_actor=1), {"CPU": 8})
