"""Text inputs: a Hugging Face `tokenizers` file turns a text column into token id columns, in a CPU stage of
its own between the check stage and the scoring actors, so tokenisation scales with the cluster's CPUs and
the model never waits on it; and pooling of token states `[N, T, D]` into one vector per row.

Token columns are fixed-size lists (`list<int64>[max_length]`), so the scoring actors view them as
`[N, T]` arrays without copying. The tokenizer is only ever read from a file shipped with the model: no hub.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tokenizers import Tokenizer

from jobs.errors import UsageError

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"
TOKEN_COLUMNS = (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS)
POOLINGS = ("mean", "cls")
_PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "<|endoftext|>")


@dataclass(frozen=True)
class TextInput:
    """How the text column becomes token columns; built on the driver, shipped to the tokenize actors with
    the tokenizer's JSON itself (workers need no shared disk)."""

    file: str  # where the tokenizer was read from, for messages
    json: str
    column: str
    max_length: int
    token_type_ids: bool  # produced only when a model input takes them

    @property
    def columns(self) -> tuple[str, ...]:
        return (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS) if self.token_type_ids else (INPUT_IDS, ATTENTION_MASK)


def load_tokenizer(file: Path | str, max_length: int):
    """Read a tokenizer file for the driver's checks (`Tokenizer.from_file`); a file that is missing or is
    not a `tokenizers` JSON is a UsageError naming the key and the file."""
    path = Path(file)
    if not path.is_file():
        raise UsageError(
            f"model.tokenizer.file: tokenizer file not found: {path} (a relative path is looked up "
            "in the model file's folder)"
        )
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a plain Exception for unreadable JSON
        raise UsageError(
            f"model.tokenizer.file: {path} is not a Hugging Face tokenizers JSON file: {str(exc).splitlines()[0]}"
        ) from None
    try:
        return configure(tokenizer, max_length)
    except ValueError as exc:
        raise UsageError(f"model.tokenizer.file: {path}: {exc}") from None


def configure(tokenizer, max_length: int):
    """Pad and truncate every text to exactly `max_length` tokens, keeping the file's pad token and
    direction when it sets them (else the first of the usual pad tokens its vocabulary has)."""
    padding = tokenizer.padding or {}
    pad_token = padding.get("pad_token") if padding else None
    pad_id = tokenizer.token_to_id(pad_token) if pad_token else None
    if pad_id is None:
        pad_token = next((t for t in _PAD_TOKENS if tokenizer.token_to_id(t) is not None), None)
        if pad_token is None:
            raise ValueError(
                f"the tokenizer sets no padding and has none of the pad tokens {list(_PAD_TOKENS)}; "
                "set its padding (tokenizer.enable_padding(pad_token=...)) and save it again"
            )
        pad_id = tokenizer.token_to_id(pad_token)
    tokenizer.enable_padding(
        length=max_length,
        pad_id=pad_id,
        pad_token=pad_token,
        direction=padding.get("direction", "right"),
        pad_type_id=padding.get("pad_type_id", 0),
    )
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


class Tokenize:
    """A Ray Data callable class: the tokenizer is built once per actor; each batch is encoded with
    `encode_batch` (parallel inside the tokenizer) into fixed-size token columns. Null texts are encoded as
    empty strings: the check stage has already failed those rows (`model_input_not_null`)."""

    def __init__(self, text: TextInput, threads: int = 1) -> None:
        os.environ.setdefault("RAYON_NUM_THREADS", str(max(1, threads)))  # before the tokenizer's thread pool starts
        self.text = text
        self.tokenizer = configure(Tokenizer.from_str(text.json), text.max_length)

    def __call__(self, batch: pa.Table) -> pa.Table:
        column = batch.column(self.text.column)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        encodings = self.tokenizer.encode_batch(pc.fill_null(column, "").to_pylist())
        fields = {INPUT_IDS: "ids", ATTENTION_MASK: "attention_mask", TOKEN_TYPE_IDS: "type_ids"}
        for name in self.text.columns:
            batch = batch.append_column(
                name, _fixed_lists([getattr(e, fields[name]) for e in encodings], self.text.max_length)
            )
        return batch


def _fixed_lists(rows: list[list[int]], width: int) -> pa.FixedSizeListArray:
    flat = np.fromiter((v for row in rows for v in row), dtype=np.int64, count=len(rows) * width)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), width)


def token_matrix(table: pa.Table, column: str) -> np.ndarray:
    """A fixed-size list column as an `[N, T]` array, viewed without copying."""
    chunked = table.column(column)
    array = chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()
    width = array.type.list_size
    return array.flatten().to_numpy(zero_copy_only=True).reshape(len(array), width)


def pool(states: np.ndarray, attention_mask: np.ndarray, how: str) -> np.ndarray:
    """Token states `[N, T, D]` -> one vector per row `[N, D]`: `mean` over the tokens the attention mask
    keeps (pad tokens excluded), or `cls`, the first token's state."""
    if states.ndim != 3:
        raise ValueError(f"pooling {how!r} needs token states [N, T, D]; the model returned shape {states.shape}")
    if how == "cls":
        return states[:, 0, :]
    mask = attention_mask.astype(states.dtype, copy=False)[:, :, None]
    return (states * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)
