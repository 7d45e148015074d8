"""`score submit`: the same `score run` as a Ray Job on a cluster, followed to its end.

The project folder becomes the job's working directory and this machine's `jobs` package travels with it
(`jobs.engines.cluster.project_runtime_env`), so the cluster runs exactly the code and spec the submitter has; the
storage and tracking settings (`SCORE_*`, `MLFLOW_*`, `AWS_*`) are forwarded as the job's environment and
never printed. The job's own `score run --json` summary and exit code become this command's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ray.job_submission import JobSubmissionClient

from jobs.engines.cluster import project_runtime_env
from jobs.errors import UsageError
from jobs.plan.plan import check_shared_storage
from jobs.spec.load import LoadedSpec, load_spec
from jobs.storage import is_remote
from jobs.tracking.code_version import CODE_VERSION_ENV, code_version
from jobs.tracking.tags import Tag

FINISHED = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class Submitted:
    ray_job_id: str
    status: str  # the Ray Job's: SUCCEEDED, FAILED or STOPPED
    exit_code: int  # the entrypoint's, i.e. `score run`'s
    summary: dict  # the run's JSON summary plus `ray_job_id` (built from Ray's word if the run printed none)


def submit_job(
    job: str | Path,
    address: str | None = None,
    *,
    partitions: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    run_key: str | None = None,
    force: bool = False,
    python: str = "python",
    logs: TextIO = sys.stderr,
) -> Submitted:
    """Submit `score run JOB` as a Ray Job at `address` (the cluster's dashboard, e.g. http://head:8265;
    default: RAY_API_SERVER_ADDRESS / RAY_ADDRESS), stream its logs to `logs` and wait for its end.

    The spec is loaded here first, so that a bad spec fails before anything is submitted. `python` is the
    interpreter on the head node that has this project's dependencies (Ray Jobs run the entrypoint with
    the head's PATH)."""
    loaded = load_spec(job, overrides)
    where = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not where:
        raise UsageError(
            "submit: give the cluster's Ray Jobs API with --address (e.g. http://head:8265) or set "
            "RAY_API_SERVER_ADDRESS / RAY_ADDRESS"
        )
    check_shared_storage(loaded, where)  # the job runs on the cluster: fail here, before submitting
    _check_reachable_from_head(loaded)
    try:
        relative = loaded.file.relative_to(loaded.root)
    except ValueError:
        raise UsageError(f"{loaded.file}: a submitted job spec must lie inside its project {loaded.root}") from None
    args = [python, "-m", "jobs.cli", "run", relative.as_posix(), "--json"]
    args += ["--partitions", partitions] if partitions else []
    args += [a for item in overrides for a in ("--set", item)]
    args += ["--run-key", run_key] if run_key else []
    args += ["--force"] if force else []
    try:
        client = JobSubmissionClient(address)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"submit: cannot reach the Ray Jobs API at {where}: {exc}") from None
    runtime_env = project_runtime_env(True, loaded.root, forward_env=loaded.spec.engine.forward_env)
    runtime_env["env_vars"][CODE_VERSION_ENV] = code_version()  # the project travels without its .git
    job_id = client.submit_job(
        entrypoint=shlex.join(args), runtime_env=runtime_env, metadata={Tag.JOB: loaded.spec.name}
    )
    print(f"score: submitted {loaded.spec.name} as Ray job {job_id}", file=logs, flush=True)
    try:
        summary = asyncio.run(_follow(client, job_id, logs))
        info = client.get_job_info(job_id)
        while _status(info) not in FINISHED:  # the log stream ended early
            time.sleep(2)
            info = client.get_job_info(job_id)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM of the submitter stops the job it started
        client.stop_job(job_id)
        raise KeyboardInterrupt(f"interrupted: Ray job {job_id} was stopped") from None
    status = _status(info)
    code = info.driver_exit_code
    if code is None:
        code = 0 if status == "SUCCEEDED" else 1
    if summary is None:  # the job ended before its run printed a summary (runtime env set-up, a crash)
        summary = {
            "status": "succeeded" if code == 0 else "failed",
            "job": loaded.spec.name,
            "exit_code": code,
            "error": None if code == 0 else f"Ray job {job_id} {status}: {info.message}",
        }
    return Submitted(job_id, status, code, {**summary, "ray_job_id": job_id})


def _check_reachable_from_head(loaded: LoadedSpec) -> None:
    """A submitted job's driver runs on the head node, in a copy of the project without its data, state or
    ignored files: its tracking store and model must be reachable from there."""
    spec = loaded.spec
    if spec.tracking.uri.startswith(("sqlite:", "file:")) or "://" not in spec.tracking.uri:
        raise UsageError(
            f"{loaded.file}: tracking.uri {spec.tracking.uri} is a local store, but a submitted job "
            "runs on the cluster's head node: set MLFLOW_TRACKING_URI to an MLflow server"
        )
    if not is_remote(spec.tracking.artifact_location):
        raise UsageError(
            f"{loaded.file}: tracking.artifact_location {spec.tracking.artifact_location} is local, "
            "but a submitted job runs on the cluster's head node: set SCORE_ARTIFACTS to object "
            "storage (s3://bucket/prefix)"
        )
    if not spec.model.uri.startswith("models:/") and not is_remote(spec.model.uri):
        raise UsageError(
            f"{loaded.file}: model.uri {spec.model.uri} is a file on this machine, which a submitted "
            "job's driver on the head node cannot read: register it (score register-model PATH "
            "--name NAME --alias ALIAS) and use models:/NAME@ALIAS"
        )


def _status(info) -> str:
    return str(getattr(info.status, "value", info.status))


async def _follow(client, job_id: str, logs: TextIO) -> dict | None:
    """Copy the job's log lines to `logs` until it ends; returns the run's JSON summary line, kept out of them."""
    summary, pending = None, ""

    def pass_on(lines: list[str]) -> None:
        nonlocal summary
        for line in lines:
            found = _summary(line)
            if found is None:
                print(line, file=logs, flush=True)
            else:
                summary = found

    async for chunk in client.tail_job_logs(job_id):
        *lines, pending = (pending + chunk).split("\n")
        pass_on(lines)
    pass_on([pending] if pending else [])
    return summary


def _summary(line: str) -> dict | None:
    """The run's `--json` summary: the one log line that is a JSON object with a status and a job."""
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) and {"status", "job"} <= value.keys() else None
