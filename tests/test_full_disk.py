"""A warehouse whose disk fills up, or turns read-only, at the output commit (issue 20), on a real filesystem: a
small tmpfs the test mounts and unmounts (skipped where mounting is not allowed).

Guards: a full disk at the output commit gave a traceback with ANSI colour codes in the JSON error, kept the
quarantine commit (its undo could not be written either), and its run key then answered `already_committed`;
a read-only warehouse hid the first error behind the cleanup's, and left files no command removed."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from deltalake import DeltaTable

import jobs.tables.delta
from tests.conftest import ROWS_PER_DAY
from tests.stages.test_quarantine import break_rows

QUARANTINE = {"suite": "data_contracts/customers.json", "on_failure": "quarantine", "max_bad_rows": 10}


@pytest.fixture
def disk(tmp_path):
    """A 32 MB tmpfs, mounted for the test only."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root and CAP_SYS_ADMIN needed): {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mount)], capture_output=True)
        subprocess.run(["umount", str(mount)], check=True)


def _fill(mount) -> None:
    with open(mount / "filler", "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass


def _before_the_output_commit(monkeypatch, then) -> None:
    """Do `then()` just before the output table's commit (the quarantine table's commit has landed)."""
    real = jobs.tables.delta.commit

    def commit(target, *args, **kwargs):
        if not target.uri.endswith("__quarantine"):
            then()
        return real(target, *args, **kwargs)

    monkeypatch.setattr(jobs.tables.delta, "commit", commit)


def test_a_full_disk_at_the_output_commit_leaves_neither_table_with_the_run(fresh_project, disk, monkeypatch):
    project = fresh_project
    bad = break_rows(project)
    job = project.job("full", contract=QUARANTINE)
    on_disk = (f"warehouse.uri={disk}",)
    _before_the_output_commit(monkeypatch, lambda: _fill(disk))
    code, failed = project.run(job, overrides=on_disk, run_key="nightly-1")
    assert code == 1, failed
    error = failed["error"]
    assert error.startswith(f"table {disk}/full: creating the table failed: ") and "No space left on device" in error
    assert "\n" not in error and "\x1b" not in error
    assert not (disk / "full" / "_delta_log").exists()
    quarantine = DeltaTable(str(disk / "full__quarantine"))
    assert quarantine.to_pyarrow_table().num_rows == 0  # its commit was undone
    assert quarantine.history(1)[0]["score.role"] == "undo"

    monkeypatch.undo()
    (disk / "filler").unlink()
    code, summary = project.run(job, overrides=on_disk, run_key="nightly-1")
    assert code == 0 and summary["status"] == "succeeded", summary
    assert (summary["rows_scored"], summary["rows_quarantined"]) == (ROWS_PER_DAY - len(bad), len(bad))
    assert DeltaTable(str(disk / "full")).to_pyarrow_table().num_rows == ROWS_PER_DAY - len(bad)
    assert sorted(DeltaTable(str(disk / "full__quarantine")).to_pyarrow_table().column("customer_id").to_pylist()) == (
        sorted(bad)
    )


def test_a_warehouse_turning_read_only_reports_the_first_error_then_what_it_could_not_clean(
    fresh_project, disk, monkeypatch
):
    project = fresh_project
    bad = break_rows(project)
    job = project.job("frozen", contract=QUARANTINE)
    on_disk = (f"warehouse.uri={disk}",)
    code, first = project.run(job, overrides=on_disk)
    assert code == 0, first["error"]

    _before_the_output_commit(monkeypatch, lambda: subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True))
    code, failed = project.run(job, overrides=on_disk, force=True, run_key="again")
    assert code == 1, failed
    error = failed["error"]
    assert error.startswith(f"table {disk}/frozen: commit failed: ") and "Read-only file system" in error
    assert f"{disk}/frozen__quarantine version 1 holds this run's rows and could not be undone" in error
    assert "its uncommitted files could not all be deleted" in error and "`score vacuum` deletes them" in error
    assert "\n" not in error and "\x1b" not in error

    monkeypatch.undo()
    subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    live = {os.path.basename(uri) for uri in DeltaTable(str(disk / "frozen")).file_uris()}
    stray = [p for p in (disk / "frozen").rglob("*.parquet") if p.name not in live]
    assert stray, "the failed run's files are left behind"
    week_ago = time.time() - 8 * 86400
    for path in stray:
        os.utime(path, (week_ago, week_ago))
    proc = project.score("vacuum", "frozen", "--warehouse", str(disk), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert all(path.name in proc.stdout for path in stray), proc.stdout
    proc = project.score("vacuum", "frozen", "--warehouse", str(disk))
    assert proc.returncode == 0 and not any(path.exists() for path in stray), proc.stdout + proc.stderr

    code, again = project.run(job, overrides=on_disk, force=True, run_key="again")  # the same key repairs
    assert code == 0, again["error"]
    assert DeltaTable(str(disk / "frozen")).to_pyarrow_table().num_rows == ROWS_PER_DAY - len(bad)
    assert sorted(
        DeltaTable(str(disk / "frozen__quarantine")).to_pyarrow_table().column("customer_id").to_pylist()
    ) == (sorted(bad))
