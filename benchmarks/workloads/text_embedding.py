"""Reference workload (4): a small text-embedding model with a real tokenizer, trained offline.

Review-like text rows in 4 partitions (`part=0..3`), a WordPiece tokenizer trained on them with `tokenizers`,
a 4-layer, 256-wide, 4-head encoder (random weights, fixed seed) with mean pooling over the attention mask,
in ONNX (`job.yaml`) and TorchScript (`job_torch.yaml`). Texts are padded and truncated to 32 tokens.

    python -m benchmarks.workloads.text_embedding --rows 20000 --out data/bench/text_embedding
    score run data/bench/text_embedding/job.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.workloads import default_out
from benchmarks.workloads.text_models import (
    encoder,
    save_model,
    sentences,
    train_tokenizer,
    write_rows,
    write_text_jobs,
)

ROWS = 20_000
PARTITIONS = 4
MAX_LENGTH = 32
LAYERS, WIDTH, HEADS = 4, 256, 4
VOCAB = 2000
BATCH_SIZE = 2048


def generate(out: Path, rows: int = ROWS) -> Path:
    """Data, tokenizer, model (both runtimes) and job specs under `out`; returns the ONNX job file."""
    texts = sentences(rows, seed=4)
    write_rows(out / "data", texts, PARTITIONS)
    tokenizer = train_tokenizer(texts[:50_000], VOCAB)
    (out / "model").mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "model" / "tokenizer.json"))
    model = encoder(tokenizer.get_vocab_size(), MAX_LENGTH, WIDTH, LAYERS, HEADS, seed=4)
    save_model(model, out / "model", MAX_LENGTH)
    return write_text_jobs(out, "bench_text_embedding", MAX_LENGTH, "mean", BATCH_SIZE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--out", type=Path, default=default_out("text_embedding"))
    args = parser.parse_args()
    job = generate(args.out, args.rows)
    print(f"wrote {args.rows:,} text rows in {PARTITIONS} partitions, the tokenizer, the model and {job}")


if __name__ == "__main__":
    main()
