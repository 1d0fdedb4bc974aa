"""A real IPFS node on loopback for tests: Kubo when an ``ipfs`` binary is on PATH, else js-ipfs.

js-ipfs (npm ``ipfs@0.66.1``, installed by ``scripts/setup-ipfs-node`` into
``tests/support/jsipfs/node_modules``) speaks the same RPC API. It needs a
``Promise.withResolvers`` polyfill on Node < 22 (``polyfill.cjs``, preloaded through
``NODE_OPTIONS``). Every node gets a fresh repo with no bootstrap peers, no delegates, no
mDNS, and every address (swarm, API, gateway, gRPC) on 127.0.0.1 port 0; the API address the
node actually bound is read back from the repo's ``api`` file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

JSIPFS_DIR = Path(__file__).resolve().parent / "jsipfs"
JSIPFS_BIN = JSIPFS_DIR / "node_modules" / ".bin" / "jsipfs"
POLYFILL = JSIPFS_DIR / "polyfill.cjs"
START_TIMEOUT = 120.0


class IpfsUnavailable(RuntimeError):
    """No IPFS node can run here (the message says why)."""


@dataclass
class IpfsNode:
    kind: str  # "kubo" | "js-ipfs"
    repo: Path
    api: str  # multiaddr of the RPC API
    proc: subprocess.Popen[bytes]
    log: Path
    swarm: list[str] = field(default_factory=list)
    peer_id: str = ""

    @property
    def api_url(self) -> str:
        parts = self.api.strip("/").split("/")
        return f"http://{parts[1]}:{parts[3]}"

    def rpc(self, cmd: str, *args: str, **params: str) -> object:
        query: list[tuple[str, str | int | float | bool | None]] = [("arg", a) for a in args]
        query += list(params.items())
        r = httpx.post(f"{self.api_url}/api/v0/{cmd}", params=query, timeout=60, trust_env=False)
        r.raise_for_status()
        return r.json() if r.content.strip() else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def node_kind() -> str:
    """Which node this machine can run; raises IpfsUnavailable saying why none."""
    if shutil.which("ipfs"):
        return "kubo"
    if not shutil.which("node"):
        raise IpfsUnavailable("no Kubo `ipfs` binary on PATH and no `node` to run js-ipfs")
    if not JSIPFS_BIN.exists():
        raise IpfsUnavailable(
            f"js-ipfs is not installed: run scripts/setup-ipfs-node (looked for {JSIPFS_BIN})"
        )
    return "js-ipfs"


def _env(repo: Path, kind: str) -> dict[str, str]:
    env = dict(os.environ, IPFS_PATH=str(repo))
    if kind == "js-ipfs":
        env["NODE_OPTIONS"] = (env.get("NODE_OPTIONS", "") + f" --require {POLYFILL}").strip()
        if not os.environ.get("HFD_TEST_IPFS_DEBUG"):
            env.pop("DEBUG", None)
    return env


def _configure(repo: Path, kind: str) -> None:
    config_path = repo / "config"
    config = json.loads(config_path.read_text())
    addresses = config.setdefault("Addresses", {})
    addresses["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
    addresses["API"] = "/ip4/127.0.0.1/tcp/0"
    addresses["Gateway"] = "/ip4/127.0.0.1/tcp/0"
    addresses["Announce"] = []
    addresses["Delegates"] = []
    if kind == "js-ipfs":
        addresses["RPC"] = "/ip4/127.0.0.1/tcp/0"  # js-ipfs's own gRPC port; 5003 by default would clash
    config["Bootstrap"] = []
    discovery = config.setdefault("Discovery", {})
    discovery.setdefault("MDNS", {})["Enabled"] = False
    if "webRTCStar" in discovery:
        discovery["webRTCStar"]["Enabled"] = False
    config_path.write_text(json.dumps(config, indent=1))


def start_node(repo: Path, *, timeout: float = START_TIMEOUT) -> IpfsNode:
    """Initialise a fresh repo at ``repo`` and start a node on it; returns once its API answers."""
    kind = node_kind()
    binary = shutil.which("ipfs") if kind == "kubo" else str(JSIPFS_BIN)
    assert binary is not None
    repo.mkdir(parents=True, exist_ok=True)
    env = _env(repo, kind)
    log = repo.parent / f"{repo.name}.log"
    init = subprocess.run(
        [binary, "init", "--profile", "test"], env=env, capture_output=True, timeout=timeout, check=False
    )
    if init.returncode != 0:
        raise IpfsUnavailable(f"{kind} init failed: {init.stderr.decode(errors='replace')[-500:]}")
    _configure(repo, kind)
    (repo / "api").unlink(missing_ok=True)
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [binary, "daemon"], env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    node = IpfsNode(kind, repo, "", proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise IpfsUnavailable(
                f"{kind} daemon exited with {proc.returncode}: {log.read_text(errors='replace')[-1000:]}"
            )
        api_file = repo / "api"
        if api_file.exists() and "Daemon is ready" in log.read_text(errors="replace"):
            node.api = api_file.read_text().strip().removesuffix("/http")
            try:
                ident = node.rpc("id")
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            assert isinstance(ident, dict)
            # js-ipfs lists no addresses in `id` right after start; both print them when ready.
            listed = list(ident.get("Addresses") or []) + re.findall(
                r"Swarm listening on (\S+)", log.read_text(errors="replace")
            )
            node.peer_id = str(ident.get("ID"))
            node.swarm = list(dict.fromkeys(a for a in listed if "/127.0.0.1/" in a and "/p2p/" in a))
            return node
        time.sleep(0.2)
    node.stop()
    raise IpfsUnavailable(
        f"{kind} daemon did not become ready in {timeout:.0f}s: {log.read_text(errors='replace')[-1000:]}"
    )
