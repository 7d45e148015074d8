"""Runs whose driver died (SIGKILL, a lost node, a scheduler's hard kill) without ending its MLflow run.

Such a run stays `RUNNING` in MLflow for ever and its written-but-uncommitted files stay in the table's
folder. Each run tags its MLflow run with its driver (`score.driver`: host, pid, process start time) and the
table versions its plan read; a later run of any job, `score tables` and `score vacuum` look for `RUNNING`
runs whose driver is gone, delete their uncommitted files (what the driver's own clean-up would have done)
and mark them `FAILED` with the reason. A driver on another host cannot be checked from here: its runs are
left alone until a command runs on that host.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

import psutil

from jobs.spec.schema import TrackingSpec
from jobs.tables.delta import discard_run_files
from jobs.tables.lineage import history, made_by
from jobs.tracking.tags import Tag


@dataclass(frozen=True)
class Reaped:
    run_id: str
    job: str
    driver: str  # host:pid
    files_removed: int
    why: str  # the reason recorded on the MLflow run


def driver_tags(read_versions: dict[str, int | None], driver_pid: int) -> dict[str, str]:
    """The tags that let a later process tell whether this run's driver (process `driver_pid`, on this host) is
    still alive."""
    me = psutil.Process(driver_pid)
    return {
        Tag.DRIVER: json.dumps({"host": socket.gethostname(), "pid": me.pid, "started": me.create_time()}),
        Tag.READ_VERSIONS: json.dumps(read_versions),
    }


def reap(tracking: TrackingSpec) -> list[Reaped]:
    """Mark this host's dead drivers' runs FAILED and delete their uncommitted files; returns what it did, for
    the caller to report. The store must be connected (`jobs.tracking.connect.connect`)."""
    from mlflow import MlflowClient  # 1.1 s to import: `score tables` and `score vacuum` need it only here

    client = MlflowClient(tracking.uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    if experiment is None:
        return []
    running = client.search_runs(
        [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    reaped = []
    for run in running:
        about = json.loads(run.data.tags.get(Tag.DRIVER) or "null")
        if not about or _alive(about):
            continue
        removed, landed = 0, []
        for uri, version in json.loads(run.data.tags.get(Tag.READ_VERSIONS) or "{}").items():
            removed += discard_run_files(uri, run.info.run_id, version)  # never a file a landed commit added
            landed += [f"{uri} v{c['version']}" for c in history(uri) if made_by(c, run.info.run_id)]
        outcome = (
            f"its commit(s) {', '.join(landed)} had landed, so the table holds their rows (a re-run with "
            "its run key scores only what they miss); its MLflow records stop before the end"
            if landed
            else "nothing was committed by it"
        )
        why = (
            f"the driver (pid {about['pid']} on {about['host']}) ended without finishing this run (killed?); "
            f"{outcome}; {removed} uncommitted file(s) deleted"
        )
        client.set_tag(run.info.run_id, Tag.ERROR, why)
        client.set_tag(run.info.run_id, Tag.ERROR_TYPE, "DriverGone")
        client.set_terminated(run.info.run_id, status="FAILED")
        reaped.append(
            Reaped(run.info.run_id, run.data.tags.get(Tag.JOB, ""), f"{about['host']}:{about['pid']}", removed, why)
        )
    return reaped


def _alive(driver: dict) -> bool:
    """True unless the driver ran on this host and its process is gone (or the pid now belongs to another)."""
    if driver.get("host") != socket.gethostname():
        return True
    try:
        process = psutil.Process(int(driver["pid"]))
        return abs(process.create_time() - float(driver["started"])) < 1.0 and process.status() != "zombie"
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's live process: cannot tell, so leave its run alone
        return True
