"""Text inputs end to end: a tokenizer trained here, a tiny BERT-like encoder (TorchScript and ONNX), real runs.

Embeddings must equal the tokenizer + model called directly, pooled in numpy; a null text is a null model input.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from benchmarks.workloads.text_models import encoder, save_model, sentences, train_tokenizer
from jobs.errors import UsageError
from jobs.models.artifacts import bind_model
from jobs.spec.load import load_tracking
from jobs.spec.schema import ModelSpec
from jobs.tracking.registry import resolve_model

MAX_LENGTH = 16
WIDTH = 32
DAY = "2026-11-27"
ROWS = 300
NULL_ID = 7  # this row's text is null


@pytest.fixture(scope="module")
def text_project(project, tmp_path_factory):
    """The session project plus a text model folder (tokenizer.json beside the model) and a partition of text."""
    texts = sentences(ROWS, seed=1)
    folder = tmp_path_factory.mktemp("text_model")
    tokenizer = train_tokenizer(sentences(2000, seed=2), vocab_size=300)
    tokenizer.save(str(folder / "tokenizer.json"))
    save_model(encoder(tokenizer.get_vocab_size(), MAX_LENGTH, WIDTH, layers=2, heads=4), folder, MAX_LENGTH)
    data = project.root / "data" / "reviews" / f"ds={DAY}"
    data.mkdir(parents=True)
    column = pa.array([None if i == NULL_ID else t for i, t in enumerate(texts)], pa.string())
    pq.write_table(pa.table({"review_id": np.arange(ROWS, dtype=np.int64), "text": column}), data / "part-0.parquet")
    suite = {
        "name": "reviews",
        "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "review_id"}}],
    }
    (project.root / "data_contracts" / "reviews.json").write_text(json.dumps(suite))
    return project, folder, texts


def text_job(project, folder, name: str, model: str, pooling: str, **changes):
    runtime = "onnx" if model.endswith(".onnx") else "torch"
    return project.job(
        name,
        **{
            "input": {"path": "data/reviews", "partitioning": ["ds"], "partitions": "latest", "id_column": "review_id"},
            "contract": {"suite": "data_contracts/reviews.json", "on_failure": "quarantine"},
            "model": {
                "uri": str(folder / model),
                "runtime": runtime,
                "tokenizer": {"file": "tokenizer.json", "column": "text", "max_length": MAX_LENGTH},
                "pooling": pooling,
                "outputs": {"last_hidden_state": "embedding"},
            },
            "scoring": {"batch_size": 64, "actors": {"min": 1, "max": 1}},
            **changes,
        },
    )


def expected_embeddings(folder, model: str, texts: list[str], pooling: str) -> np.ndarray:
    """The tokenizer and the model called directly, pooled in numpy."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_padding(length=MAX_LENGTH, pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    tokenizer.enable_truncation(MAX_LENGTH)
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    assert mask.sum(axis=1).max() == MAX_LENGTH and mask.sum(axis=1).min() < MAX_LENGTH  # truncated and padded
    if model.endswith(".onnx"):
        import onnxruntime as ort

        states = ort.InferenceSession(str(folder / model)).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    else:
        import torch

        with torch.no_grad():
            states = torch.jit.load(str(folder / model))(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    if pooling == "cls":
        return states[:, 0, :]
    return (states * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("model, pooling, engine", [("encoder.onnx", "mean", "ray"), ("encoder.pt", "cls", "inline")])
def test_embeddings_equal_the_model_called_directly(text_project, model, pooling, engine):
    """Through Ray (the tokenize actors, then the scoring actors) and inline (both in the driver)."""
    project, folder, texts = text_project
    name = f"reviews_{pooling}"
    limit = 0 if engine == "ray" else ROWS
    code, summary = project.run(text_job(project, folder, name, model, pooling, engine={"inline_max_rows": limit}))
    assert code == 0, summary["error"]
    assert summary["engine"] == engine
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_quarantined"]) == (ROWS, ROWS - 1, 1)

    table = DeltaTable(str(project.warehouse / name)).to_pyarrow_table().sort_by("review_id")
    ids = table.column("review_id").to_numpy()
    np.testing.assert_array_equal(ids, [i for i in range(ROWS) if i != NULL_ID])
    files = DeltaTable(str(project.warehouse / name)).file_uris()
    assert pq.read_schema(files[0]).field("embedding").type == pa.list_(pa.float32(), WIDTH)
    got = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    expected = expected_embeddings(folder, model, [texts[i] for i in ids], pooling)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

    quarantined = DeltaTable(str(project.warehouse / f"{name}__quarantine")).to_pyarrow_table()
    assert quarantined.column("review_id").to_pylist() == [NULL_ID]
    assert quarantined.column("_reasons").to_pylist() == [
        [{"expectation": "model_input_not_null", "column": "text", "value": "null"}]
    ]


def test_a_bad_tokenizer_path_names_the_key_and_the_file(text_project):
    project, folder, _ = text_project
    job = text_job(
        project,
        folder,
        "reviews_bad",
        "encoder.onnx",
        "mean",
        model__tokenizer={"file": "missing.json", "column": "text", "max_length": MAX_LENGTH},
    )
    code, summary = project.run(job)
    assert code == 2
    assert summary["error"].startswith("model.tokenizer.file: tokenizer file not found: ")
    assert str(folder / "missing.json") in summary["error"]

    (folder / "broken.json").write_text("{not json")
    spec = ModelSpec(
        uri=str(folder / "encoder.onnx"),
        outputs={"last_hidden_state": "e"},
        tokenizer={"file": "broken.json", "column": "text", "max_length": MAX_LENGTH},
        pooling="mean",
    )
    with pytest.raises(UsageError, match=r"model.tokenizer.file: .*broken.json is not a Hugging Face tokenizers JSON"):
        resolve_model(spec, load_tracking(project.root, environ=project.env))


def test_text_models_are_checked_before_any_row_is_read(text_project):
    project, folder, _ = text_project
    tracking = load_tracking(project.root, environ=project.env)
    schema = pa.schema([("review_id", pa.int64()), ("text", pa.string()), ("score", pa.float64())])
    tokenizer = {"file": "tokenizer.json", "column": "text", "max_length": MAX_LENGTH}

    def bind(**model):
        spec = ModelSpec(uri=str(folder / "encoder.onnx"), outputs={"last_hidden_state": "e"}, **model)
        return bind_model(resolve_model(spec, tracking), spec, schema, "input")

    binding = bind(tokenizer=tokenizer, pooling="mean")
    assert binding.input_columns == ["text"]
    assert binding.output_fields() == [pa.field("e", pa.list_(pa.float32(), WIDTH))]
    with pytest.raises(UsageError, match=r"'last_hidden_state' is token states \[N, 16, 32\]: set model.pooling"):
        bind(tokenizer=tokenizer)
    with pytest.raises(UsageError, match="model.pooling needs model.tokenizer"):
        ids = ["review_id"] * MAX_LENGTH
        bind(pooling="mean", inputs={"input_ids": ids, "attention_mask": ids})
    with pytest.raises(UsageError, match="takes 16 tokens per row; model.tokenizer.max_length is 8: set it to 16"):
        bind(tokenizer={**tokenizer, "max_length": 8}, pooling="mean")
    with pytest.raises(UsageError, match="model.tokenizer.column: column 'score' is double in input, not text"):
        bind(tokenizer={**tokenizer, "column": "score"}, pooling="mean")


def test_the_bare_loop_scores_a_text_model_with_the_jobs_tokenizer(text_project, tmp_path):
    """`score bench`'s yardstick on a text model: the plain conversion cannot make token inputs, so the task
    carries the job's binding and the bare loop process (run as `score bench` runs it) tokenizes and pools as
    the job does."""
    from jobs.spec.load import load_spec
    from jobs.tools.bare_loop import Task

    project, folder, texts = text_project
    spec = load_spec(text_job(project, folder, "reviews_bare", "encoder.onnx", "mean")).spec
    source = pq.read_table(next((project.root / "data" / "reviews").rglob("*.parquet")))
    kept = source.filter(pc.is_valid(source.column("text")))  # the job quarantines the null text
    pq.write_table(kept, tmp_path / "in.parquet", row_group_size=100)
    model = resolve_model(spec.model, spec.tracking)
    binding = bind_model(model, spec.model, kept.schema, "the test")
    task = Task.of(model, binding, [str(tmp_path / "in.parquet")], "review_id", 64)
    assert task.binding is not None and task.columns == ["review_id", "text"]
    task.save(tmp_path / "task.json")
    done = subprocess.run(
        [sys.executable, "-m", "jobs.tools.bare_loop", str(tmp_path / "task.json"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"rows": ROWS - 1}
    written = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    ids = written.column("review_id").to_numpy()
    np.testing.assert_array_equal(ids, [i for i in range(ROWS) if i != NULL_ID])
    got = np.array(written.column("embedding").to_pylist(), dtype=np.float32)
    expected = expected_embeddings(folder, "encoder.onnx", [texts[i] for i in ids], "mean")
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
