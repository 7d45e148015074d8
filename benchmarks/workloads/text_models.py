"""What the text workloads (and tests/test_text.py) build offline: generated sentences, a WordPiece tokenizer
trained on them with `tokenizers`' own trainer, a BERT-like encoder in torch returning token states
`[N, T, D]`, saved as TorchScript and as ONNX, and Parquet rows of text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "ha", "do", "be", "fi", "gu"]
_COMMON = [
    "the",
    "a",
    "service",
    "was",
    "very",
    "not",
    "good",
    "bad",
    "slow",
    "fast",
    "delivery",
    "price",
    "quality",
    "and",
    "but",
    "would",
    "buy",
    "again",
    "never",
    "great",
    "support",
    "product",
    "late",
]


def sentences(rows: int, seed: int = 0, max_words: int = 40) -> list[str]:
    """`rows` review-like texts: common words mixed with generated ones (so WordPiece has sub-words to learn),
    from 1 to `max_words` words, long enough that some are truncated at 32 tokens."""
    rng = np.random.default_rng(seed)
    rare = ["".join(rng.choice(_SYLLABLES, size=rng.integers(2, 5))) for _ in range(400)]
    words = np.array(_COMMON + rare)
    weights = np.r_[np.full(len(_COMMON), 8.0), np.ones(len(rare))]
    weights /= weights.sum()
    lengths = rng.integers(1, max_words + 1, size=rows)
    picks = rng.choice(words, size=int(lengths.sum()), p=weights)
    ends = np.cumsum(lengths)
    return [" ".join(picks[end - n : end]) for n, end in zip(lengths, ends)]


def train_tokenizer(corpus: list[str], vocab_size: int = 1000):
    """A BERT-style WordPiece tokenizer ([CLS] text [SEP], lower-cased), trained on `corpus` offline."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(
        corpus, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    )
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tokenizer


def encoder(vocab_size: int, max_length: int, width: int, layers: int, heads: int, seed: int = 0):
    """A BERT-like encoder with random weights (fixed seed): token + position embeddings, `layers` post-norm
    transformer layers (GELU, 4x feed-forward). forward(input_ids, attention_mask) -> token states [N, T, D].

    Positions are a [T, D] parameter added whole (T is fixed at `max_length`), so the exported graph has no
    shape arithmetic on the ids."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens = torch.nn.Embedding(vocab_size, width)
            self.positions = torch.nn.Parameter(torch.randn(max_length, width) * 0.02)
            self.norm = torch.nn.LayerNorm(width)
            layer = torch.nn.TransformerEncoderLayer(
                width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True
            )
            self.layers = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            for weight in self.layers.parameters():  # the encoder clones one layer: give each its own weights
                if weight.dim() > 1:
                    torch.nn.init.xavier_uniform_(weight)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            states = self.norm(self.tokens(input_ids) + self.positions)
            return self.layers(states, src_key_padding_mask=attention_mask == 0)

    torch.manual_seed(seed)
    return Encoder().eval()


def save_model(model, folder: Path, max_length: int, name: str = "encoder") -> tuple[Path, Path]:
    """`folder/<name>.onnx` (inputs input_ids, attention_mask [N, max_length] int64; output
    last_hidden_state [N, max_length, D]) and `folder/<name>.pt` (TorchScript, the same signature)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    ids = torch.zeros(2, max_length, dtype=torch.int64)
    mask = torch.ones(2, max_length, dtype=torch.int64)
    onnx_path, torchscript_path = folder / f"{name}.onnx", folder / f"{name}.pt"
    torch.jit.script(model).save(str(torchscript_path))
    batch = {0: "N"}
    torch.onnx.export(
        model,
        (ids, mask),
        str(onnx_path),
        dynamo=False,
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        opset_version=17,
        dynamic_axes={"input_ids": batch, "attention_mask": batch, "last_hidden_state": batch},
    )
    return onnx_path, torchscript_path


def write_rows(folder: Path, texts: list[str], partitions: int, first_id: int = 0) -> int:
    """`part=K/part-0.parquet` with `id` (int64, unique) and `text`; texts split evenly in order."""
    bounds = np.linspace(0, len(texts), partitions + 1).astype(int)
    for k, (start, end) in enumerate(zip(bounds, bounds[1:])):
        part = folder / f"part={k}"
        part.mkdir(parents=True, exist_ok=True)
        ids = np.arange(first_id + start, first_id + end, dtype=np.int64)
        pq.write_table(pa.table({"id": ids, "text": pa.array(texts[start:end], pa.string())}), part / "part-0.parquet")
    return len(texts)


def write_text_jobs(out: Path, name: str, max_length: int, pooling: str, batch_size: int) -> Path:
    """`out/job.yaml` (ONNX, `model/encoder.onnx`) and `out/job_torch.yaml` (TorchScript, `model/encoder.pt`, table
    `<name>_torch`), both with `model/tokenizer.json`; returns the ONNX job file."""
    from benchmarks.workloads import write_job

    write_job(
        out,
        text_job(f"{name}_torch", "model/encoder.pt", "tokenizer.json", max_length, pooling, "torch", batch_size),
        "job_torch.yaml",
    )
    return write_job(
        out, text_job(name, "model/encoder.onnx", "tokenizer.json", max_length, pooling, "onnx", batch_size)
    )


def text_job(
    name: str, model: str, tokenizer: str, max_length: int, pooling: str, runtime: str, batch_size: int
) -> dict:
    """A job over `data/part=K` text rows: one embedding column per row, no contract. Batches are small: a
    transformer's activations grow with rows x tokens x width."""
    return {
        "name": name,
        "input": {"path": "data", "partitioning": ["part"], "partitions": "all", "id_column": "id"},
        "model": {
            "uri": model,
            "runtime": runtime,
            "tokenizer": {"file": tokenizer, "column": "text", "max_length": max_length},
            "pooling": pooling,
            "outputs": {"last_hidden_state": "embedding"},
        },
        "scoring": {"batch_size": batch_size},
        "output": {"table": name, "partition_by": ["part"]},
    }
