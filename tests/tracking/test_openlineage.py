"""OpenLineage run events of `score run` (jobs.tracking.openlineage): START then COMPLETE, FAIL or ABORT, through the
client's own transports (file, http), holding what the run committed; nothing at all without a transport, and a
transport that fails never changes the run.

Runs are small (two days of 6,000 rows, one with broken rows) on the inline engine."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import json
import logging
import os
import socket
import sys
import threading
import uuid
from importlib.metadata import version
from pathlib import Path
from unittest import mock

import pytest
import yaml
from deltalake import DeltaTable

from jobs.contracts.suite import expectation_key
from jobs.errors import SpecError
from jobs.spec.load import load_spec
from jobs.spec.schema import OpenLineageSpec
from jobs.tables.lineage import describe
from jobs.tools import synthetic
from jobs.tracking.openlineage import configured
from tests.conftest import LAST_DAY, ROWS_PER_DAY, Project

BROKEN_DAY = LAST_DAY + dt.timedelta(days=1)  # 2% of its rows break the contract
PARTITIONS = f"ds={LAST_DAY}..{BROKEN_DAY}"
QUARANTINE = {"suite": "data_contracts/customers.json", "on_failure": "quarantine"}
INLINE = {"inline_max_rows": 1_000_000}


@pytest.fixture(scope="module")
def project(tmp_path_factory, models_dir) -> Project:
    project = Project(tmp_path_factory.mktemp("openlineage"), models_dir)
    synthetic.write_partitions(project.data, [BROKEN_DAY], ROWS_PER_DAY, defects={BROKEN_DAY: 0.02})
    return project


@pytest.fixture
def environment():
    """Set OPENLINEAGE* variables for one test: the client adds its own (OPENLINEAGE__TRANSPORT__TRANSPORTS__...) when
    it reads OPENLINEAGE_URL; all go afterwards, and the ones there before come back."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("OPENLINEAGE")}

    def clear() -> None:
        for key in [k for k in os.environ if k.startswith("OPENLINEAGE")]:
            del os.environ[key]

    clear()
    yield os.environ
    clear()
    os.environ.update(saved)


def file_transport(folder: Path) -> Path:
    """openlineage.yml naming the client's file transport, one event per line of `folder/events`."""
    config = folder / "openlineage.yml"
    transport = {"type": "file", "log_file_path": str(folder / "events"), "append": True}
    config.write_text(yaml.safe_dump({"transport": transport}))
    return config


def events_in(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def by_name(datasets: list[dict]) -> dict[str, dict]:
    return {d["name"].rsplit("/", 1)[-1]: d for d in datasets}


def test_a_run_sends_start_then_complete_with_what_it_committed(project, environment, tmp_path):
    environment["OPENLINEAGE_CONFIG"] = str(file_transport(tmp_path))
    job = project.job("ol_file", contract=QUARANTINE, engine=INLINE)
    code, summary = project.run(job, PARTITIONS)
    assert code == 0, summary["error"]
    assert summary["rows_quarantined"] > 0 and summary["quarantine_version"] is not None

    start, complete = events = events_in(tmp_path / "events")
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert start["run"]["runId"] == complete["run"]["runId"]
    assert uuid.UUID(start["run"]["runId"])
    for event in events:
        assert event["job"]["namespace"] == "score" and event["job"]["name"] == "ol_file"
        assert event["job"]["facets"]["jobType"]["processingType"] == "BATCH"
        assert event["producer"].startswith("urn:score-jobs:")
        assert "errorMessage" not in event["run"]["facets"]

    # the input: one dataset, the input folder, with the partitions and files read
    (read,) = complete["inputs"]
    assert (read["namespace"], read["name"]) == ("file", str(project.data))
    assert read["facets"]["version"]["datasetVersion"] == summary["input_fingerprint"]
    assert read["inputFacets"]["inputStatistics"]["rowCount"] == summary["rows_in"] == 2 * ROWS_PER_DAY
    partitions = read["inputFacets"]["score_partitions"]["partitions"]
    assert [p["partition"] for p in partitions] == summary["partitions"] == [f"ds={LAST_DAY}", f"ds={BROKEN_DAY}"]
    for partition in partitions:
        folder = project.data / partition["partition"]
        on_disk = {p.relative_to(project.data).as_posix(): p.stat().st_size for p in folder.glob("*.parquet")}
        assert {f["path"]: f["size"] for f in partition["files"]} == on_disk
        assert partition["rows"] == sum(f["rows"] for f in partition["files"]) == ROWS_PER_DAY
    assert {"customer_id", "age", "region"} <= {f["name"] for f in read["facets"]["schema"]["fields"]}

    # the outputs: the table and its quarantine at the versions committed, with their rows
    outputs = by_name(complete["outputs"])
    table = outputs["ol_file"]
    assert (table["namespace"], table["name"]) == ("file", summary["table_uri"])
    assert table["facets"]["version"]["datasetVersion"] == str(summary["table_version"])
    assert DeltaTable(summary["table_uri"]).version() == summary["table_version"]
    assert table["outputFacets"]["outputStatistics"]["rowCount"] == summary["rows_scored"]
    assert table["facets"]["storage"]["storageLayer"] == "delta"
    assert {"churn_probability", "churn_label", "run_id"} <= {f["name"] for f in table["facets"]["schema"]["fields"]}
    quarantine = outputs["ol_file__quarantine"]
    assert quarantine["facets"]["version"]["datasetVersion"] == str(summary["quarantine_version"])
    assert DeltaTable(summary["table_uri"] + "__quarantine").version() == summary["quarantine_version"]
    assert quarantine["outputFacets"]["outputStatistics"]["rowCount"] == summary["rows_quarantined"]
    profiles = outputs["ol_file__profiles"]
    assert profiles["facets"]["version"]["datasetVersion"] == str(summary["drift"]["profiles_version"])
    assert set(by_name(start["outputs"])) == {"ol_file", "ol_file__quarantine"}  # none committed yet
    assert all("version" not in d["facets"] for d in start["outputs"])

    # the run: MLflow run, counts, code and Ray versions as the table's own lineage records them
    run = complete["run"]["facets"]["score_run"]
    recorded = describe(summary["table_uri"])["runs"][0]
    assert run["mlflowRunId"] == summary["run_id"] == recorded["run_id"]
    assert run["runKey"] == summary["run_key"]
    assert (run["rowsIn"], run["rowsScored"], run["rowsQuarantined"]) == (
        summary["rows_in"],
        summary["rows_scored"],
        summary["rows_quarantined"],
    )
    assert run["tableVersions"] == summary["table_versions"]
    assert (run["status"], run["engine"], run["exitCode"]) == ("succeeded", "inline", 0)
    assert (run["codeVersion"], run["codeSha256"]) == (recorded["code_version"], recorded["code_sha256"])
    assert run["rayVersion"] == version("ray")
    assert "mlflowRunId" not in start["run"]["facets"]["score_run"]

    model = complete["run"]["facets"]["score_model"]
    sha256 = hashlib.sha256((project.models / "model.onnx").read_bytes()).hexdigest()
    assert model["sha256"] == sha256 == summary["model_sha256"]
    assert (model["version"], model["runtime"]) == (summary["model_version"], "onnx")

    # the contract's verdict: per expectation, counts only
    contract = complete["run"]["facets"]["score_contract"]
    failures = {key: failure["rows"] for key, failure in summary["contract"]["failures"].items()}
    assert (contract["verdict"], contract["rowsFailed"]) == ("quarantined", summary["contract"]["rows_failed"])
    assert contract["failures"] == failures and len(failures) >= 5  # the five broken columns
    assert contract["sha256"] == summary["contract"]["sha256"]
    assert "verdict" not in start["run"]["facets"]["score_contract"]
    assertions = read["inputFacets"]["dataQualityAssertions"]["assertions"]
    suite = json.loads((project.root / "data_contracts" / "customers.json").read_text())["expectations"]
    in_suite = {expectation_key(e["type"], e.get("kwargs", {}).get("column")) for e in suite}
    assert len(assertions) == len(suite) + len(set(failures) - in_suite)  # and the checks the pipeline adds
    assert {a["name"] for a in assertions if not a["success"]} == set(failures)
    assert {a["actual"] for a in assertions if a["name"] in failures} == {str(n) for n in failures.values()}


def test_a_contract_failure_sends_start_then_fail_with_its_message(project, environment):
    job = project.job(
        "ol_contract",
        contract={**QUARANTINE, "max_bad_fraction": 0.001},
        engine=INLINE,
        # the job's own transport: a file, relative to the project root, and a namespace of its own
        lineage={"openlineage": {"namespace": "scoring-prod", "transport": {"type": "file", "log_file_path": "ol"}}},
    )
    code, summary = project.run(job, PARTITIONS)
    assert (code, summary["status"]) == (3, "failed")

    files = sorted(project.root.glob("ol-*.json"), key=lambda p: p.stat().st_mtime_ns)
    start, fail = events = [json.loads(p.read_text()) for p in files]
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    assert start["run"]["runId"] == fail["run"]["runId"]
    assert fail["job"] == {**fail["job"], "namespace": "scoring-prod", "name": "ol_contract"}
    error = fail["run"]["facets"]["errorMessage"]
    assert error["message"] == summary["error"] and "max_bad_fraction" in error["message"]
    assert (error["programmingLanguage"], error.get("stackTrace")) == ("python", None)  # a user's failure, not a bug
    assert fail["run"]["facets"]["score_contract"]["verdict"] == "failed"
    assert fail["run"]["facets"]["score_run"]["exitCode"] == 3
    assert all("version" not in d["facets"] for d in fail["outputs"])  # nothing committed
    assert not DeltaTable.is_deltatable(summary["table_uri"])


def test_a_bug_fails_with_its_traceback_and_an_interrupt_aborts(project, environment, tmp_path, monkeypatch):
    environment["OPENLINEAGE_CONFIG"] = str(file_transport(tmp_path))
    job = project.job("ol_abort", contract=QUARANTINE, engine=INLINE)

    def broken(point: str) -> None:
        if point == "commit":
            raise ZeroDivisionError("a bug")

    monkeypatch.setattr("jobs.commands.run.inject", broken)
    with pytest.raises(ZeroDivisionError):
        project.run(job, PARTITIONS)

    def interrupted(point: str) -> None:
        if point == "commit":
            raise KeyboardInterrupt("signal 15")

    monkeypatch.setattr("jobs.commands.run.inject", interrupted)
    with pytest.raises(KeyboardInterrupt):
        project.run(job, PARTITIONS)

    events = events_in(tmp_path / "events")
    assert [e["eventType"] for e in events] == ["START", "FAIL", "START", "ABORT"]
    assert events[0]["run"]["runId"] == events[1]["run"]["runId"] != events[2]["run"]["runId"]
    bug = events[1]["run"]["facets"]["errorMessage"]
    assert bug["message"] == "ZeroDivisionError: a bug" and "Traceback" in bug["stackTrace"]
    assert events[3]["run"]["facets"]["errorMessage"]["message"] == "KeyboardInterrupt: signal 15"


class _Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers["Content-Type"], json.loads(body)))  # type: ignore[attr-defined]
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_cli_run_posts_its_events_to_an_http_receiver(project, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        job = project.job("ol_http", contract=QUARANTINE, engine=INLINE)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        proc, summary = project.score_json("run", str(job), "-p", PARTITIONS, env={"OPENLINEAGE_URL": url})
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OpenLineage" not in proc.stderr

    received = server.received  # type: ignore[attr-defined]
    assert [(path, kind) for path, kind, _ in received] == [("/api/v1/lineage", "application/json")] * 2
    start, complete = (event for _, _, event in received)
    assert [start["eventType"], complete["eventType"]] == ["START", "COMPLETE"]
    assert start["run"]["runId"] == complete["run"]["runId"]
    assert complete["job"]["name"] == "ol_http"
    outputs = by_name(complete["outputs"])
    assert outputs["ol_http"]["facets"]["version"]["datasetVersion"] == str(summary["table_version"])
    assert outputs["ol_http__quarantine"]["facets"]["version"]["datasetVersion"] == str(summary["quarantine_version"])
    assert complete["run"]["facets"]["score_run"]["mlflowRunId"] == summary["run_id"]
    assert complete["run"]["facets"]["score_model"]["sha256"] == summary["model_sha256"]


def test_without_a_transport_nothing_is_imported_or_sent(project, environment, caplog):
    job = project.job("ol_none", contract=QUARANTINE, engine=INLINE)
    # the client, were it imported, would fail to: the run would log that it sent nothing
    hidden = {name: None for name in sys.modules if name.startswith("openlineage")}
    with mock.patch.dict(sys.modules, {**hidden, "openlineage": None, "jobs.tracking.openlineage_events": None}):
        with caplog.at_level(logging.INFO):
            code, summary = project.run(job, PARTITIONS)
    assert (code, summary["status"]) == (0, "succeeded")
    assert not [r for r in caplog.records if "openlineage" in r.name.lower() or "OpenLineage" in r.getMessage()]


def test_a_receiver_that_is_down_costs_one_warning_never_the_run(project, environment, caplog):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = {"type": "http", "url": f"http://127.0.0.1:{port}", "retry": {"total": 2, "backoff_factor": 0.01}}
    job = project.job("ol_down", contract=QUARANTINE, engine=INLINE, lineage={"openlineage": {"transport": transport}})
    with caplog.at_level(logging.WARNING):
        code, summary = project.run(job, PARTITIONS)
    assert (code, summary["status"], summary["error"]) == (0, "succeeded", None)
    assert DeltaTable(summary["table_uri"]).version() == summary["table_version"]
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING and "127.0.0.1" in r.getMessage()]
    assert len(warned) == 1 and warned[0].name == "jobs.tracking.openlineage"
    assert warned[0].getMessage().startswith("OpenLineage: START event not sent: ConnectionError")

    # the command says it among the run's own lines, once; its summary and exit code are the run's
    proc, again = project.score_json("run", str(job), "-p", PARTITIONS, "--force")
    assert (proc.returncode, again["status"], again["error"]) == (0, "succeeded", None)
    said = [line for line in proc.stderr.splitlines() if "OpenLineage" in line]
    assert len(said) == 1 and "score: ol_down: warning: OpenLineage: START event not sent: ConnectionError" in said[0]


def test_what_counts_as_a_configured_transport(environment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not configured(OpenLineageSpec())
    assert configured(OpenLineageSpec(transport={"type": "console"}))
    assert not configured(OpenLineageSpec(enabled=False, transport={"type": "console"}))
    (tmp_path / "openlineage.yml").write_text("facets:\n  environment_variables: [USER]\n")
    assert not configured(OpenLineageSpec())  # a config file without a transport: the client would print to console
    (tmp_path / "openlineage.yml").write_text("transport:\n  type: console\n")
    assert configured(OpenLineageSpec())
    (tmp_path / "openlineage.yml").unlink()
    environment["OPENLINEAGE__TRANSPORT__TYPE"] = "console"
    assert configured(OpenLineageSpec())
    del environment["OPENLINEAGE__TRANSPORT__TYPE"]
    environment["OPENLINEAGE_URL"] = "http://127.0.0.1:5000"
    assert configured(OpenLineageSpec())
    environment["OPENLINEAGE_DISABLED"] = "true"
    assert not configured(OpenLineageSpec(transport={"type": "console"}))


def test_datasets_are_named_as_openlineage_names_them():
    from jobs.tracking.openlineage_events import dataset_name

    assert dataset_name("/data/customers/") == ("file", "/data/customers")
    assert dataset_name("file:///data/customers") == ("file", "/data/customers")
    assert dataset_name("s3://analytics/warehouse/churn_scores") == ("s3://analytics", "warehouse/churn_scores")
    assert dataset_name("s3a://analytics/input") == ("s3://analytics", "input")
    assert dataset_name("gs://bucket/key/table") == ("gs://bucket", "key/table")


def test_where_lineage_goes_is_not_part_of_the_spec_hash(project):
    plain = load_spec(project.job("ol_hash"))
    transport = {"type": "http", "url": "${MARQUEZ_URL:-http://127.0.0.1:5000}"}
    elsewhere = load_spec(project.job("ol_hash", lineage={"openlineage": {"transport": transport}}))
    assert elsewhere.spec.lineage.openlineage.transport == {"type": "http", "url": "http://127.0.0.1:5000"}
    assert plain.spec_hash == elsewhere.spec_hash  # so the run key stays: the same work is not scored again
    with pytest.raises(SpecError, match=r"lineage\.openlineage\.transport: name the transport's type"):
        load_spec(project.job("ol_hash"), ["lineage.openlineage.transport.url=http://127.0.0.1:5000"])
