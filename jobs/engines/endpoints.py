"""The servers a run depends on, checked with one TCP connection each before any data is read.

MLflow's client retries an unreachable server with backoff for minutes, `ray.init` retries an address for
ever, and object-store clients retry too: a server that is down looked like a hung job to a scheduler. A
refused or timed-out connection is a `RetryableFailure` (exit 75): nothing was read or written, and the
same command may succeed once the server is back.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from typing import TYPE_CHECKING

from jobs.errors import RetryableFailure
from jobs.storage import redact_uri

if TYPE_CHECKING:
    from jobs.spec.schema import JobSpec

TIMEOUT_S = 10.0


def check(
    host: str, port: int, what: str, fix: str, done: str = "nothing was read or written", timeout_s: float = TIMEOUT_S
) -> None:
    """Refuse at once when nothing accepts a connection at host:port; `what`, `fix` and `done` (what the run
    has not done yet) make the message."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise RetryableFailure(
            f"{what}: nothing answers at {host}:{port} ({exc.strerror or exc}): {fix}; {done}"
        ) from None


def check_tracking(uri: str) -> None:
    """An MLflow server (http/https); file and database stores need no server."""
    if urllib.parse.urlsplit(uri).scheme in ("http", "https"):
        _check_url(uri, "tracking store", "start the MLflow server, or fix MLFLOW_TRACKING_URI / tracking.uri")


def check_job(spec: JobSpec) -> None:
    """The servers a run of `spec` needs before it plans: its tracking store (also its model registry) and
    its input's and tables' object store. The Ray cluster is checked when Ray starts (`check_ray`), after
    the plan, so that a bad spec or partition is reported as such even with no cluster up."""
    check_tracking(spec.tracking.uri)
    for uri in dict.fromkeys([spec.input.path, spec.table_uri()]):
        check_storage(uri)


def check_ray(address: str) -> None:
    """A Ray cluster's GCS (`HOST:PORT`); `auto` and the other forms Ray resolves itself are left to it."""
    host, _, port = address.rpartition(":")
    if host and port.isdigit():
        check(
            host,
            int(port),
            f"engine.ray_address {address}",
            "start it, or fix RAY_ADDRESS / engine.ray_address (HEAD:6379, the head's GCS port)",
            "nothing was scored or committed",
        )


def check_storage(uri: str) -> None:
    """The object-store endpoint of an `s3://` URI when one is configured (MinIO, a gateway): AWS itself,
    GCS and Azure are not probed."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not uri.startswith(("s3://", "s3a://")) or not endpoint:
        return
    _check_url(endpoint, "storage endpoint", "start it, or fix AWS_ENDPOINT_URL", f" (for {redact_uri(uri)})")


def _check_url(url: str, name: str, fix: str, context: str = "") -> None:
    """`check` the host and port of an http(s) URL (default ports 80 / 443), naming it `name URL context` with
    the URL written without the user info it may carry (a token, a password)."""
    parsed = urllib.parse.urlsplit(url)
    if not parsed.hostname:
        return
    shown = f"{parsed.scheme}://{parsed.hostname}{f':{parsed.port}' if parsed.port else ''}{parsed.path}"
    check(parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80), f"{name} {shown}{context}", fix)
