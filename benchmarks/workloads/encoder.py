"""Reference workload (3): a BERT-base-sized transformer encoder over text, the GPU case.

12 layers, width 768, 12 heads, sequence 128, random weights (fixed seed), in ONNX (`job.yaml`) and
TorchScript (`job_torch.yaml`); a WordPiece tokenizer trained offline on the generated rows; `cls` pooling
(the first token's state, BERT-style) into a 768-float embedding per row. Rows run long (up to 120 words),
so most fill the 128 tokens. About 0.9 GB of model files (both runtimes).

    python -m benchmarks.workloads.encoder --rows 200000 --out data/bench/encoder
    score run data/bench/encoder/job.yaml --set scoring.gpus_per_actor=1
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

ROWS = 200_000
PARTITIONS = 8
MAX_LENGTH = 128
LAYERS, WIDTH, HEADS = 12, 768, 12
VOCAB = 8000
BATCH_SIZE = 1024


def generate(out: Path, rows: int = ROWS, layers: int = LAYERS) -> Path:
    """Data, tokenizer, model (both runtimes) and job specs under `out`; returns the ONNX job file."""
    texts = sentences(rows, seed=3, max_words=120)
    write_rows(out / "data", texts, PARTITIONS)
    tokenizer = train_tokenizer(texts[:50_000], VOCAB)
    (out / "model").mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "model" / "tokenizer.json"))
    save_model(encoder(tokenizer.get_vocab_size(), MAX_LENGTH, WIDTH, layers, HEADS, seed=3), out / "model", MAX_LENGTH)
    return write_text_jobs(out, "bench_encoder", MAX_LENGTH, "cls", BATCH_SIZE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--out", type=Path, default=default_out("encoder"))
    parser.add_argument("--layers", type=int, default=LAYERS, help="fewer for a quick check of the pipeline")
    args = parser.parse_args()
    job = generate(args.out, args.rows, args.layers)
    print(f"wrote {args.rows:,} text rows in {PARTITIONS} partitions, the tokenizer, the model and {job}")


if __name__ == "__main__":
    main()
