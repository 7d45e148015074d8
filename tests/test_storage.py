"""URIs to filesystems: file paths stay full URIs wherever they travel, and delta-rs gets what it needs."""

from __future__ import annotations

import pytest

from jobs.storage import delta_options, filesystem, uri_of


def test_listed_paths_become_full_uris_again():
    """Guards the cluster path: pyarrow lists `bucket/key`, which reads as a relative local path on a worker.
    (Reading through the S3 filesystem needs an endpoint: tests/test_cluster.py does it against one.)"""
    assert (
        uri_of("lake/customers/ds=1/part-0.parquet", "s3://lake/customers") == "s3://lake/customers/ds=1/part-0.parquet"
    )
    assert (
        uri_of("lake/customers/ds=1/part-0.parquet", "gs://lake/customers") == "gs://lake/customers/ds=1/part-0.parquet"
    )
    assert uri_of("/data/customers/ds=1/p.parquet", "/data/customers") == "/data/customers/ds=1/p.parquet"
    fs, path = filesystem("file:///data/customers/")
    assert (fs.type_name, path) == ("local", "/data/customers")


@pytest.mark.parametrize(
    ("uri", "endpoint", "expected"),
    [
        ("s3://lake/warehouse/t", "http://127.0.0.1:9000", {"AWS_ALLOW_HTTP": "true"}),
        ("s3://lake/warehouse/t", "https://s3.example.com", None),
        ("s3://lake/warehouse/t", None, None),
        ("/tmp/warehouse/t", "http://127.0.0.1:9000", None),
    ],
)
def test_delta_rs_is_told_to_allow_a_plain_http_endpoint(monkeypatch, uri, endpoint, expected):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    if endpoint is None:
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    assert delta_options(uri) == expected
