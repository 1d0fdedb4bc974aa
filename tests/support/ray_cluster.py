"""A real two-node Ray cluster on loopback for tests and benchmarks: ``ray start --head`` and
``ray start --address`` as child processes, each node with one CPU, a small object store and
its own hfd directories and IPFS node (``HFD_STATE_DIR`` ... in its environment, which its
replicas inherit). Every port is picked free, so a cluster never collides with another on the
box. A node runs ``--block`` in its own process group: :meth:`RayNode.kill` takes the node down
with its workers, as a machine failure would."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from support.daemon import OutputReader

RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT = 300.0  # a loaded 2-core box takes minutes to start a Ray node


class RayUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_env(
    root: Path, *, ipfs_api: str | None = None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment a node (and so every replica on it) runs with: its own hfd dirs."""
    env = {
        "HFD_STATE_DIR": str(root / "state"),
        "HFD_CACHE_DIR": str(root / "cache"),
        "HFD_RUNTIME_DIR": str(root / "run"),
        "HFD_STORE_USE_HF_CACHE": "false",
        "HFD_HUB_OFFLINE": "true",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
    }
    if ipfs_api is not None:
        env["HFD_IPFS_API"] = ipfs_api
    env.update(extra or {})
    return env


@dataclass
class RayNode:
    proc: subprocess.Popen[bytes]
    root: Path
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the node's whole process group: raylet, its workers, its replicas."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@dataclass
class RayCluster:
    address: str
    head: RayNode
    temp_dir: Path
    workers: list[RayNode] = field(default_factory=list)
    base_env: dict[str, str] = field(default_factory=dict)

    def add_node(self, root: Path, env: dict[str, str], *, num_cpus: float = 1) -> RayNode:
        node = _start(
            root,
            ["--address", self.address, *_ports(head=False), "--num-cpus", str(num_cpus)],
            {**self.base_env, **env},
        )
        self.workers.append(node)
        try:
            wait_nodes(self.address, 1 + len(self.workers), env=self.base_env)
        except RayUnavailable as exc:
            raise RayUnavailable(f"{exc}\nthe joining node's output:\n{node.output()}") from None
        return node

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            node.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _ports(*, head: bool) -> list[str]:
    out = [
        "--node-manager-port", str(free_port()),
        "--object-manager-port", str(free_port()),
        "--metrics-export-port", str(free_port()),
        "--dashboard-agent-listen-port", str(free_port()),
        "--dashboard-agent-grpc-port", str(free_port()),
        "--runtime-env-agent-port", str(free_port()),
    ]  # fmt: skip
    if head:
        out += ["--ray-client-server-port", str(free_port())]
    return out


def _start(root: Path, args: list[str], env: dict[str, str]) -> RayNode:
    if not RAY.exists():
        raise RayUnavailable(f"no {RAY}: install hfd[ray] (scripts/setup --dev)")
    root.mkdir(parents=True, exist_ok=True)
    log = root / "ray-node.log"
    cmd = [
        str(RAY), "start", "--block", "--node-ip-address", "127.0.0.1",
        "--object-store-memory", str(80 * 1024 * 1024), "--disable-usage-stats", *args,
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True
        )
    return RayNode(proc=proc, root=root, log=log)


def wait_nodes(address: str, count: int, *, env: dict[str, str], timeout: float = START_TIMEOUT) -> None:
    """Until ``count`` nodes are alive in the cluster (asked through ``ray status``)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        done = subprocess.run(
            [str(RAY), "status", "--address", address],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=60,
        )
        last = done.stdout + done.stderr
        active = last.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in last else ""
        if active.count("node_") >= count:
            return
        time.sleep(1.0)
    raise RayUnavailable(f"the cluster did not reach {count} nodes:\n{last[-2000:]}")


def start_cluster(root: Path, head_env: dict[str, str], *, num_cpus: float = 1) -> RayCluster:
    """A head node under ``root`` (its own Ray temp dir, short: Ray's socket paths are bounded)."""
    temp_dir = Path(f"/tmp/hfd-ray-{os.getpid()}-{time.monotonic_ns() % 10**6}")
    port = free_port()
    address = f"127.0.0.1:{port}"
    base = {"RAY_USAGE_STATS_ENABLED": "0"}
    head = _start(
        root,
        [
            "--head", "--port", str(port), "--num-cpus", str(num_cpus), "--include-dashboard=false",
            "--temp-dir", str(temp_dir), *_ports(head=True),
        ],
        {**base, **head_env},
    )  # fmt: skip
    cluster = RayCluster(address=address, head=head, temp_dir=temp_dir, base_env=base)
    try:
        wait_nodes(address, 1, env=base)
    except RayUnavailable:
        out = head.output()
        cluster.stop()
        raise RayUnavailable(f"the head node did not start:\n{out}") from None
    return cluster


@dataclass
class RayServe:
    """A running ``hfd serve --ray`` (its HTTP ingress at ``http``)."""

    proc: subprocess.Popen[str]
    http: str
    reader: OutputReader
    base_url: str = ""  # the OpenAI base URL: http + "/v1"

    def __post_init__(self) -> None:
        self.base_url = self.http + "/v1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.reader.thread.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def serve_on_ray(cluster: RayCluster, config: Path, state_dir: Path, args: list[str]) -> RayServe:
    """``hfd serve --ray`` on ``cluster`` with ``config``; returns once the ingress lists models."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "hfd", "serve", "--config", str(config), "--state-dir", str(state_dir),
        "--http-port", str(port), "--ray", cluster.address, *args,
    ]  # fmt: skip
    env = {**os.environ, **cluster.base_env, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    reader = OutputReader(proc)
    served = RayServe(proc, f"http://127.0.0.1:{port}", reader)
    if reader.wait_ready(300) is None:
        served.stop()
        raise RayUnavailable("hfd serve --ray did not become ready:\n" + "\n".join(reader.lines[-60:]))
    deadline = time.monotonic() + 180
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(served.base_url + "/models", timeout=30)
            if r.status_code == 200 and r.json()["data"]:
                return served
            last = r.text
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(1.0)
    served.stop()
    raise RayUnavailable(f"the ingress did not answer: {last}")
