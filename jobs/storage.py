"""One place that turns a URI (local path, file://, s3://, gs://, ...) into a pyarrow filesystem."""

from __future__ import annotations

from pyarrow import fs as pafs


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem for `uri` and the path inside it, without a trailing slash."""
    if "://" in uri and not uri.startswith("file://"):
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), uri.removeprefix("file://").rstrip("/")
