"""Hive-style partition folders (`column=value/`), encoded and decoded exactly as pyarrow, Spark and delta-rs do.

A value is percent-encoded in a folder name (all but letters, digits and `-._~`: `North East` is
`North%20East`, `a/b` is `a%2Fb`), and a null value is the folder `column=__HIVE_DEFAULT_PARTITION__`. An
empty value (`column=`) reads as null too: Delta keeps no empty partition value (its protocol reads one as
null), and Spark writes an empty string as null. Column names are written as they are (pyarrow and delta-rs
do) and decoded when read (Spark encodes them).

A folder name is decoded once, where input files are listed; everywhere else values are held decoded, and
encoded only to name a folder or a label. A Delta log holds each file's path URI-encoded once more
(`region=North%2520East/part-0.parquet`): `log_path` and `file_path` convert, so that a commit names exactly
the paths the log holds.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable

NULL = "__HIVE_DEFAULT_PARTITION__"

PartitionValue = str | None


def value_of(cell: object) -> PartitionValue:
    """A partition value from a partition column's cell (its text; null for the null partition)."""
    return None if cell is None else str(cell)


def decode(text: str) -> PartitionValue:
    """The value of a folder name's `column=TEXT`."""
    value = urllib.parse.unquote(text)
    return None if value in ("", NULL) else value


def encode(value: PartitionValue) -> str:
    """The `TEXT` of a folder name's `column=TEXT` for a value."""
    return NULL if value is None or value == "" else urllib.parse.quote(value, safe="")


def parse(segment: str) -> tuple[str, PartitionValue] | None:
    """`column=TEXT` as (column, value); None when the segment is not a partition folder."""
    name, sep, text = segment.partition("=")
    if not sep or not name:
        return None
    return urllib.parse.unquote(name), decode(text)


def folder(values: Iterable[tuple[str, PartitionValue]]) -> str:
    """`a=1/b=North%20East`: the folders of a partition, in column order ("" when unpartitioned)."""
    return "/".join(f"{name}={encode(value)}" for name, value in values)


def log_path(path: str) -> str:
    """The form in which a Delta log holds a file's path relative to the table: what delta-rs writes for it (its
    URL path encoding, which keeps `/:@!$&'()+,;=~` and escapes `*`, checked against deltalake 1.6)."""
    return urllib.parse.quote(path, safe="/:@!$&'()+,;=~")


def file_path(logged: str) -> str:
    """A file's path relative to the table, from the form its Delta log holds (what delta-rs takes to name it)."""
    return urllib.parse.unquote(logged)
