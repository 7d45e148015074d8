"""The one type each input column has in a run, the type the tables store it as, and the casts between them.

Files of one input rarely agree on every type: pyarrow, pandas and Spark write a column as int32 in one file and
float64 in the next, dictionary-encoded or not, with timestamps in any unit or zone. A run reads each column as
the narrowest type that holds every file's values (`run_type`: their join, not a vote among files), and casts
each file's column to it value by value with Arrow's safe cast (`conform`): a value that does not fit fails its
row, naming the file and column, never the file or the run. A file that lacks a column, or whose type no cast
reaches, fails whole (`castable`).

The tables store a column in a form that does not depend on which files a run selected (`stored_type`), and
that every Delta reader reads: integers as int64 (uint64 as decimal(20,0), which holds every value), floats
as float64, text as string, timestamps as microseconds in UTC (a naive time is read as UTC, nanoseconds are
truncated to microseconds), dates as date32, durations as int64 microseconds, times of day as text, a column
of nulls as text. A run over int32 files and a later one over float64 files then write the same table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SCHEMA = "schema"  # the reason's expectation when a value, or a whole file, does not fit the run's type

Reasons = list[dict[str, str]]


def normal(kind: pa.DataType) -> pa.DataType:
    """A type as a run holds it: dictionary decoded, views as plain arrays, timestamps in microseconds, dates
    in days. Every stage after the read sees only these."""
    if pa.types.is_dictionary(kind):
        return normal(kind.value_type)
    if pa.types.is_string_view(kind):
        return pa.string()
    if pa.types.is_binary_view(kind):
        return pa.binary()
    if pa.types.is_timestamp(kind):
        return pa.timestamp("us", kind.tz)
    if pa.types.is_duration(kind):
        return pa.duration("us")
    if pa.types.is_time(kind):
        return pa.time64("us")
    if pa.types.is_date64(kind):
        return pa.date32()
    return kind


def run_type(kinds: Iterable[pa.DataType]) -> pa.DataType | None:
    """The type a run reads a column of these types as: their join, which holds every value of each (integers
    of any width, floats, decimals: checked value by value where it may not); None when no type joins them (a
    struct and a number, text and a number: "02134" is not the number 2134). A column of nulls joins anything."""
    found = list(dict.fromkeys(normal(k) for k in kinds if not pa.types.is_null(k)))
    if not found:
        return pa.null()
    if len(found) == 1:
        return found[0]
    if all(_is_text(k) for k in found):
        return pa.large_string() if pa.large_string() in found else pa.string()
    if all(_is_binary(k) for k in found):
        return pa.large_binary() if pa.large_binary() in found else pa.binary()
    if all(pa.types.is_timestamp(k) or pa.types.is_date(k) for k in found):
        zones = {k.tz for k in found if pa.types.is_timestamp(k)}
        return pa.timestamp("us", zones.pop() if len(zones) == 1 else "UTC")
    if all(_is_number(k) for k in found):
        return _number_join(found)
    return None


def castable(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether a column of type `source` is cast to `target` value by value (else its file fails whole)."""
    return run_type([source, target]) == target


def stored_type(kind: pa.DataType) -> pa.DataType:
    """How a table stores a column the run holds as `kind` (see the module's docstring)."""
    if pa.types.is_integer(kind):
        return pa.decimal128(20, 0) if kind == pa.uint64() else pa.int64()
    if pa.types.is_floating(kind):
        return pa.float64()
    if _is_text(kind):
        return pa.string()
    if _is_binary(kind):
        return pa.binary()
    if pa.types.is_timestamp(kind):
        return pa.timestamp("us", "UTC")
    if pa.types.is_duration(kind):  # Delta has no duration type
        return pa.int64()
    if pa.types.is_time(kind):  # nor a time of day: "14:30:00.000123"
        return pa.string()
    if pa.types.is_null(kind):  # a column no selected file has a value in: text, which any later type casts to
        return pa.string()
    return normal(kind)


def widens(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether every value of type `source` casts to `target` without loss (an existing table's column type a
    run may keep writing to). A naive time counts as UTC; text holds every flat value as text."""
    source, target = normal(source), normal(target)
    if source == target or pa.types.is_null(source) or (_is_binary(source) and _is_binary(target)):
        return True
    if _is_text(target):  # text holds any value of a flat type (a table that began with a column of nulls)
        return not pa.types.is_nested(source) and not _is_binary(source)
    if pa.types.is_integer(source) and pa.types.is_integer(target):
        return _int_range(source)[0] >= _int_range(target)[0] and _int_range(source)[1] <= _int_range(target)[1]
    if pa.types.is_integer(source) and pa.types.is_floating(target):
        return source.bit_width <= MANTISSA_BITS[target.bit_width]
    if pa.types.is_integer(source) and pa.types.is_decimal(target):
        return target.scale == 0 and len(str(max(map(abs, _int_range(source))))) <= target.precision
    if pa.types.is_floating(source) and pa.types.is_floating(target):
        return source.bit_width <= target.bit_width
    if pa.types.is_decimal(source) and pa.types.is_decimal(target):
        return target.scale >= source.scale and target.precision - target.scale >= source.precision - source.scale
    if pa.types.is_timestamp(source) and pa.types.is_timestamp(target):
        return True  # units are microseconds after `normal`; zones are instants
    return pa.types.is_date(source) and pa.types.is_timestamp(target)


def conform(table: pa.Table, schema: pa.Schema, file: str) -> tuple[pa.Table, list[Reasons | None]]:
    """`table`'s columns cast to their types in `schema` (columns it lacks are left to the caller), every field
    nullable (a writer's `not null` would keep the files' tables from joining): each row's reasons, None where
    every value fit. A value that does not fit becomes null; its reason keeps it as text."""
    reasons: list[Reasons | None] = [None] * table.num_rows
    targets = {field.name: field.type for field in schema}
    columns = []
    for name in table.column_names:
        values = table.column(name)
        target = targets.get(name, values.type)
        if values.type != target:
            cast, bad = cast_values(values, target)
            for i in np.flatnonzero(bad).tolist():
                unfit = f"{values[i].as_py()!r} ({values.type} in {file.rsplit('/', 1)[-1]}) does not fit {target}"
                add_reason(reasons, i, {"expectation": SCHEMA, "column": name, "value": unfit})
            values = cast
        columns.append(values)
    if not columns:
        return table, reasons  # no column: its rows are still its rows
    return pa.Table.from_arrays(columns, names=table.column_names), reasons


def add_reason(reasons: list[Reasons | None], row: int, *found: dict[str, str]) -> None:
    """Give row `row` more reasons to fail (None: it had none)."""
    reasons[row] = (reasons[row] or []) + list(found)


def cast_values(values: pa.ChunkedArray | pa.Array, target: pa.DataType) -> tuple[pa.ChunkedArray, np.ndarray]:
    """`values` cast to `target` with Arrow's safe cast, and a mask of the values that did not fit (null in the
    result). A finite float that becomes infinite does not fit (Arrow would let it). Timestamps are truncated to
    microseconds; a decimal becomes a float only where it has at most 15 significant digits (which a float64
    keeps)."""
    values = values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])
    bad = np.zeros(len(values), dtype=bool)
    chunks = []
    offset = 0
    for chunk in values.chunks:
        chunks.append(_cast_chunk(chunk, target, bad[offset : offset + len(chunk)]))
        offset += len(chunk)
    return pa.chunked_array(chunks, target), bad


def _cast_chunk(chunk: pa.Array, target: pa.DataType, bad: np.ndarray) -> pa.Array:
    """Cast one array and mark the values that do not fit in `bad`: one safe cast when every value fits;
    otherwise numbers are checked at once (an unchecked cast and back), other types by halving the array
    around the failures."""
    try:
        cast = _safe_cast(chunk, target)
    except pa.ArrowNotImplementedError:  # no cast between the types: no value fits
        bad[:] = chunk.is_valid().to_numpy(zero_copy_only=False)
        return pa.nulls(len(chunk), target)
    except pa.ArrowInvalid:
        if _is_plain_number(chunk.type) and _is_plain_number(target):
            return _cast_numbers(chunk, target, bad)
        if len(chunk) == 1:
            bad[0] = True
            return pa.nulls(1, target)
        half = len(chunk) // 2
        return pa.concat_arrays(
            [_cast_chunk(chunk.slice(0, half), target, bad[:half]), _cast_chunk(chunk.slice(half), target, bad[half:])]
        )
    if pa.types.is_floating(target) and pa.types.is_floating(chunk.type):  # Arrow lets 70000 become a float16 inf
        overflow = pc.and_(pc.is_finite(chunk), pc.invert(pc.is_finite(cast)))
        if pc.any(overflow).as_py():
            bad |= pc.fill_null(overflow, False).to_numpy(zero_copy_only=False)
            cast = pc.if_else(overflow, pa.nulls(len(cast), target), cast)
    if pa.types.is_decimal(chunk.type) and pa.types.is_floating(target) and chunk.type.precision > _DECIMAL_DIGITS:
        inexact = np.array(
            [v is not None and len(v.normalize().as_tuple().digits) > _DECIMAL_DIGITS for v in chunk.to_pylist()]
        )
        if inexact.any():
            bad |= inexact
            cast = pc.if_else(pa.array(inexact), pa.nulls(len(cast), target), cast)
    return cast


def _cast_numbers(chunk: pa.Array, target: pa.DataType, bad: np.ndarray) -> pa.Array:
    """Integers and floats the safe cast refused: a value fits when the unchecked cast gives it back unchanged,
    with its sign (2^64 - 1 as an int64 is -1, which comes back as 2^64 - 1)."""
    unchecked = pc.cast(chunk, target, safe=False)
    back = pc.cast(unchecked, chunk.type, safe=False)
    signs = pc.not_equal(pc.less(chunk, pa.scalar(0, chunk.type)), pc.less(unchecked, pa.scalar(0, target)))
    differs = pc.or_(pc.not_equal(back, chunk), signs)
    mask = pc.fill_null(differs, False).to_numpy(zero_copy_only=False)
    bad |= mask
    return pc.if_else(pa.array(mask), pa.nulls(len(chunk), target), unchecked)


def _safe_cast(chunk: pa.Array, target: pa.DataType) -> pa.Array:
    if any(check(target) and check(normal(chunk.type)) for check in _TIMES):
        return pc.cast(chunk, options=pc.CastOptions(target, allow_time_truncate=True))
    return pc.cast(chunk, target)


_TIMES = (pa.types.is_timestamp, pa.types.is_duration, pa.types.is_time)  # truncated to microseconds


def stored(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` (the run's types) in the types `schema` stores (`stored_type`, or an existing table's): durations
    as int64 microseconds, times of day as text, the rest by Arrow's cast (lossless by construction)."""
    columns = []
    for field in schema:
        values = table.column(field.name)
        if pa.types.is_duration(values.type) and pa.types.is_integer(field.type):
            values = pc.cast(values, pa.duration("us"), safe=False).cast(pa.int64())
        elif pa.types.is_time(values.type) and pa.types.is_string(field.type):
            values = pc.cast(values, pa.time64("us"), safe=False).cast(pa.string())
        columns.append(values.cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_binary(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def _is_number(kind: pa.DataType) -> bool:
    return _is_plain_number(kind) or pa.types.is_decimal(kind)


def _is_plain_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


_DECIMAL_DIGITS = 15  # a decimal of at most this many significant digits survives float64 and back (DBL_DIG)
MANTISSA_BITS = {16: 11, 32: 24, 64: 53}  # a float of this width holds every integer up to 2 ** bits exactly
_SIGNED = [pa.int8(), pa.int16(), pa.int32(), pa.int64()]


def _int_range(kind: pa.DataType) -> tuple[int, int]:
    bits = kind.bit_width
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if pa.types.is_signed_integer(kind) else (0, 2**bits - 1)


def _number_join(kinds: Sequence[pa.DataType]) -> pa.DataType:
    """Integers: the narrowest integer holding them all (int64 past it, each value checked). Floats only: the
    widest. Decimals only: the decimal holding them all. Any other mix: float64 (each value checked)."""
    if all(pa.types.is_integer(k) for k in kinds):
        low = min(_int_range(k)[0] for k in kinds)
        high = max(_int_range(k)[1] for k in kinds)
        if low == 0:
            return max(kinds, key=lambda k: k.bit_width)
        return next((k for k in _SIGNED if _int_range(k)[0] <= low and _int_range(k)[1] >= high), pa.int64())
    if all(pa.types.is_decimal(k) for k in kinds):
        return pa.unify_schemas([pa.schema([("v", k)]) for k in kinds], promote_options="permissive").field("v").type
    if all(pa.types.is_floating(k) for k in kinds):
        return max(kinds, key=lambda k: k.bit_width)
    return pa.float64()
