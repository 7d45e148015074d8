"""Real servers for the cluster tests, started on loopback addresses and stopped by the pids we started.

- `s3_server()`: moto's S3 server (`moto_server`), the object store every node and the driver share.
- `mlflow_server()`: `mlflow server` with a sqlite backend store; artifacts go to S3 from the clients.
- `ray_cluster()`: a head node on 127.0.0.2 (Ray Jobs dashboard on loopback) and a worker node on
  127.0.0.3 that offers the custom resource `worker_node`, with token authentication.

Each is started with `--block` / in the foreground in its own session, so that stopping it means signalling
exactly the process group we created: never `ray stop` or a kill by name.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class Started:
    """A process we started (in its own session) and its log file."""

    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM to our process group, then SIGKILL to whatever of it is left."""
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            if not _group_alive(self.proc.pid):
                return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def start(name: str, args: list[str], logs: Path, env: dict[str, str]) -> Started:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Started(name, proc, log)


def wait_until(ready, what: str, started: Started, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if started.proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {started.proc.returncode}:\n{started.tail()}")
        if ready():
            return
        time.sleep(0.3)
    raise RuntimeError(f"{what} not ready after {timeout}s:\n{started.tail()}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@dataclass
class S3:
    endpoint: str
    env: dict[str, str]  # what a client needs: endpoint, region, credentials

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.env["AWS_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def filesystem(self):
        from pyarrow import fs as pafs

        return pafs.S3FileSystem(
            endpoint_override=self.endpoint,
            scheme="http",
            region=self.env["AWS_REGION"],
            access_key=self.env["AWS_ACCESS_KEY_ID"],
            secret_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )


@contextmanager
def s3_server(logs: Path):
    port = free_port()
    server = start("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], logs, dict(os.environ))
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(endpoint), "moto S3 server", server)
        yield S3(
            endpoint,
            {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing-secret",
            },
        )
    finally:
        server.stop()


@dataclass
class MlflowServer:
    uri: str
    started: Started

    def wait(self, timeout: float = 120) -> None:
        """Until the server answers: it takes seconds to start, which a test may spend on something else first."""
        wait_until(lambda: _answers(f"{self.uri}/health"), "mlflow server", self.started, timeout=timeout)


@contextmanager
def mlflow_server(logs: Path, backend: Path, env: dict[str, str], wait: bool = True):
    """`mlflow server` over a sqlite store, stopped on exit; `wait=False` yields it before it answers (`wait()`)."""
    port = free_port()
    server = start(
        "mlflow",
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{backend}",
            "--no-serve-artifacts",
            "--workers",
            "1",
        ],
        logs,
        {**os.environ, **env, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    running = MlflowServer(f"http://127.0.0.1:{port}", server)
    try:
        if wait:
            running.wait()
        yield running
    finally:
        server.stop()


@dataclass
class RayCluster:
    address: str  # the GCS address drivers join
    dashboard: str  # the Ray Jobs endpoint
    env: dict[str, str]  # what a driver needs: the auth token
    nodes: list[Started] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.tail()}" for n in self.nodes)


def _ray_start(name: str, ip: str, extra: list[str], tmp: Path, logs: Path, env: dict[str, str]) -> Started:
    # Ray picks free ports itself, except the dashboard agent's (a fixed default the two nodes would share).
    return start(
        name,
        [
            str(BIN / "ray"),
            "start",
            "--block",
            f"--node-ip-address={ip}",
            "--num-cpus=1",
            f"--temp-dir={tmp}",
            f"--dashboard-agent-listen-port={free_port(ip)}",
            *extra,
        ],
        logs,
        env,
    )


@contextmanager
def ray_cluster(tmp: Path, logs: Path, worker_env: dict[str, str] | None = None):
    """Head (no custom resources) and one worker node (`worker_node: 2`). `worker_env` is added to the
    worker node's environment (its processes inherit it); the nodes get no storage credentials of their
    own: the driver forwards what the job needs."""
    token = secrets.token_hex(32)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "SCORE_", "RAY_"))}
    base.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_DATA_DISABLE_PROGRESS_BARS="1")
    port, dash = free_port(HEAD_IP), free_port(HEAD_IP)
    cluster = RayCluster(
        f"{HEAD_IP}:{port}", f"http://{HEAD_IP}:{dash}", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    )
    try:
        head = _ray_start(
            "ray-head",
            HEAD_IP,
            [
                "--head",
                f"--port={port}",
                "--include-dashboard=true",
                f"--dashboard-host={HEAD_IP}",
                f"--dashboard-port={dash}",
                f"--ray-client-server-port={free_port(HEAD_IP)}",
            ],
            tmp,
            logs,
            base,
        )
        cluster.nodes.append(head)
        wait_until(lambda: _answers(f"{cluster.dashboard}/api/version"), "Ray head", head)
        _join_worker(cluster, tmp, logs, {**base, **(worker_env or {})})
        yield cluster
    finally:
        for node in reversed(cluster.nodes):
            node.stop()


def _join_worker(cluster: RayCluster, tmp: Path, logs: Path, env: dict[str, str], attempts: int = 3) -> None:
    """Start the worker node, again if it gives up during start-up: `ray start` allows its raylet a fixed 30 s
    to register with the GCS, which a loaded 2-core CI machine has missed once. A failed attempt's process
    group is stopped and its log kept (ray-worker-1.log, ...); the last failure is raised with the raylets'
    own logs."""
    for attempt in range(1, attempts + 1):
        worker = _ray_start(
            "ray-worker" if attempt == 1 else f"ray-worker-{attempt}",
            WORKER_IP,
            [f"--address={cluster.address}", "--resources=" + json.dumps({"worker_node": 2})],
            tmp,
            logs,
            env,
        )
        cluster.nodes.append(worker)
        try:
            wait_until(lambda: _alive_nodes(cluster) >= 2, "Ray worker node", worker)
            return
        except RuntimeError as failed:
            if worker.proc.poll() is None or attempt == attempts:
                raylets = "\n".join(
                    f"--- {log}\n{log.read_text(errors='replace')[-2000:]}"
                    for log in sorted(tmp.glob("session_*/logs/raylet*.out"))
                )
                raise RuntimeError(f"{failed}\n{raylets}") from None
            worker.stop()
            cluster.nodes.remove(worker)


def _alive_nodes(cluster: RayCluster) -> int:
    """Alive nodes, as the head's dashboard reports them."""
    request = urllib.request.Request(
        f"{cluster.dashboard}/nodes?view=summary", headers={"Authorization": f"Bearer {cluster.env['RAY_AUTH_TOKEN']}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            summary = json.load(response)["data"]["summary"]
    except (OSError, KeyError, ValueError):
        return 0
    return sum(1 for n in summary if n.get("raylet", {}).get("state") == "ALIVE")
