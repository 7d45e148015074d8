"""One place that turns a URI (local path, file://, s3://, gs://, ...) into a filesystem: pyarrow's for
listing, footers, reads, writes and cleanup, delta-rs storage options for Delta tables.

Paths that leave this module are full URIs (`s3://bucket/key`), never a filesystem's internal form
(`bucket/key`, which reads as a relative local path): a file listed on the driver is read by a worker
through `filesystem(path)` wherever it runs. Endpoint, region and credentials come from the usual `AWS_*`
(or `GOOGLE_*`, `AZURE_*`) environment variables, which both pyarrow and delta-rs read.
"""

from __future__ import annotations

import functools
import os
import re

from deltalake import DeltaTable
from pyarrow import fs as pafs

# scheme://USERINFO@: the user info runs to the last @ before the path, query or fragment.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#\s\"]*)@")
_CONTAINER_SCHEMES = ("abfs", "abfss", "wasb", "wasbs")  # their user info names a container, not a user


def is_remote(uri: str) -> bool:
    """Object storage or any other non-local filesystem (anything with a scheme but `file://`)."""
    return "://" in uri and not uri.startswith("file://")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem for `uri` and the path inside it, without a trailing slash."""
    if not is_remote(uri):
        return pafs.LocalFileSystem(), uri.removeprefix("file://").rstrip("/")
    scheme, rest = uri.split("://", 1)
    if scheme in _BUCKET_SCHEMES:  # one client per bucket: creating one resolves the region (a request)
        return _bucket_filesystem(scheme, rest.split("/", 1)[0]), rest.rstrip("/")
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


def uri_of(path: str, like: str) -> str:
    """The URI of `path`, a path inside the filesystem of the URI `like` (as a listing returns it)."""
    if not is_remote(like):
        return path
    scheme, rest = like.split("://", 1)
    if scheme in _BUCKET_SCHEMES:  # the bucket is the path's first part
        return f"{scheme}://{path}"
    return f"{scheme}://{rest.split('/', 1)[0]}/{path.lstrip('/')}"  # host, then the path


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def redact_uri(text: str) -> str:
    """`text` with the user info of every URI in it masked (`https://user:token@host` -> `https://***@host`,
    `postgresql://user:pw@host/db` -> `postgresql://***@host/db`): URIs are recorded and printed, and their
    user info is usually a credential. Azure's `abfss://container@account...` names a container and stays."""

    def mask(match: re.Match) -> str:
        scheme, userinfo = match.group(1), match.group(2)
        if scheme.lower() in _CONTAINER_SCHEMES and ":" not in userinfo:
            return match.group(0)
        return f"{scheme}://***@"

    return _USERINFO.sub(mask, text)


def write_text(uri: str, text: str) -> None:
    """Write a small text file (a report) to a local path or an object-store URI."""
    fs, path = filesystem(uri)
    with fs.open_output_stream(path) as out:
        out.write(text.encode())


def delta_options(uri: str) -> dict[str, str] | None:
    """delta-rs storage options beyond what it reads from the environment: it refuses a plain-http S3
    endpoint (MinIO, moto, a gateway inside the cluster) unless told to allow it; pyarrow does not ask."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    if uri.startswith(("s3://", "s3a://")) and endpoint.startswith("http://"):
        return {"AWS_ALLOW_HTTP": "true"}
    return None


def delta_table(uri: str, version: int | None = None) -> DeltaTable:
    """The Delta table at `uri` (at `version`), on whatever storage the URI names."""
    return DeltaTable(uri, version=version, storage_options=delta_options(uri))


_BUCKET_SCHEMES = ("s3", "gs", "gcs")


def delta_dataset(uri: str, table: DeltaTable):
    """The Arrow dataset of a Delta table version, read through a native pyarrow filesystem: deltalake's own is
    a Python object, slower, and reads it leaves in flight (a query stopped by LIMIT) can crash the
    interpreter at exit."""
    fs, root = filesystem(uri)
    return table.to_pyarrow_dataset(filesystem=pafs.SubTreeFileSystem(root, fs))


@functools.lru_cache(maxsize=64)
def _bucket_filesystem(scheme: str, bucket: str) -> pafs.FileSystem:
    return pafs.FileSystem.from_uri(f"{scheme}://{bucket}")[0]
