"""hfd on a real two-node Ray cluster on loopback (``-m ray``): ``hfd serve --ray`` deploys a
model with one replica per node; the official ``openai`` client talks to the ingress, streaming
included; the replica on the second node fetches the weights from the first node's IPFS store;
and a node killed under load costs at most the requests it held, the next ones succeed on the
surviving node. The fake engine serves: the engine is not the point here."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

pytest.importorskip("ray", reason="needs hfd[ray] (Ray Serve)")
openai = pytest.importorskip("openai")

from support.daemon import write_config  # noqa: E402
from support.fake_models import fake_model  # noqa: E402
from support.ipfs_node import IpfsNode, IpfsUnavailable, start_node  # noqa: E402
from support.ray_cluster import (  # noqa: E402
    RayCluster,
    RayServe,
    RayUnavailable,
    node_env,
    serve_on_ray,
    start_cluster,
)
from support.store_env import store_settings  # noqa: E402

from hfd.backends.registry import FAKE_ENGINE_ENV  # noqa: E402
from hfd.daemon.store.model_store import ModelStore  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.ipfs, pytest.mark.slow, pytest.mark.timeout(600)]


@dataclass
class Fleet:
    cluster: RayCluster
    served: RayServe
    node_b_state: Path
    clients: list[openai.OpenAI] = field(default_factory=list)  # closed with the fleet


@pytest.fixture(scope="module")
def fleet(ipfs_node: IpfsNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("ray")
    with contextlib.ExitStack() as stack:
        try:  # node B's own IPFS node, peered with node A's
            second_ipfs = start_node(root / "ipfs-b")
        except IpfsUnavailable as exc:
            pytest.skip(f"no second IPFS node: {exc}")
        stack.callback(second_ipfs.stop)
        second_ipfs.rpc("swarm/connect", ipfs_node.swarm[0])
        yield from _fleet(root, ipfs_node, second_ipfs)


def _fleet(root: Path, ipfs_node: IpfsNode, second_ipfs: IpfsNode) -> Iterator[Fleet]:
    a, b = root / "node-a", root / "node-b"
    # The model is on node A only: in its store and its IPFS node.
    store_a = ModelStore(store_settings(a, ipfs_api=ipfs_node.api))
    cid = store_a.publish(str(fake_model(root / "models", "llama")), repo="acme/fake-chat").cid
    fake = {FAKE_ENGINE_ENV: "1", "HFD_IPFS_TIMEOUT": "60"}
    try:
        cluster = start_cluster(a, node_env(a, ipfs_api=ipfs_node.api, extra=fake))
    except RayUnavailable as exc:
        pytest.skip(f"no Ray cluster: {exc}")
    try:
        cluster.add_node(b, node_env(b, ipfs_api=second_ipfs.api, extra=fake))
        config = write_config(root / "config.toml", {"chat": f"ipfs://{cid}"}, "default_keep_alive = -1\n")
        args = ["--ray-replicas", "2:2", "--ray-replica-cpus", "0.5", "--ray-max-per-node", "1"]
        served = serve_on_ray(cluster, config, a / "state", args)
        fleet = Fleet(cluster, served, b / "state")
        try:
            yield fleet
        finally:
            for client in fleet.clients:
                client.close()
            served.stop()
    finally:
        cluster.stop()


def _client(fleet: Fleet, timeout: float) -> openai.OpenAI:
    client = openai.OpenAI(base_url=fleet.served.base_url, api_key="unused", max_retries=0, timeout=timeout)
    fleet.clients.append(client)
    return client


def _chat(client: openai.OpenAI, text: str = "hi") -> str:
    reply = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": text}], max_tokens=5, temperature=0
    )
    return reply.choices[0].message.content or ""


def test_openai_client_through_the_ingress(fleet: Fleet) -> None:
    client = _client(fleet, 60)
    assert [m.id for m in client.models.list().data] == ["chat"]
    whole = _chat(client)
    assert whole
    stream = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=5, temperature=0, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) >= 2 and "".join(pieces) == whole  # chunk by chunk, same text
    with pytest.raises(openai.NotFoundError) as err:  # hfd's own error body, through the ingress
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="chat", messages=[], max_tokens=-1)
    assert bad.value.status_code == 400


def test_the_second_node_fetched_the_model_over_ipfs(fleet: Fleet) -> None:
    stored = list(fleet.node_b_state.rglob("model.safetensors"))
    assert stored, f"node B's store holds no model under {fleet.node_b_state}"


def test_metrics_of_every_replica_on_one_endpoint(fleet: Fleet) -> None:
    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(fleet.served.http + "/metrics", timeout=30).text
        replicas = {
            line.split('replica="', 1)[1].split('"', 1)[0]
            for line in text.splitlines()
            if 'replica="' in line
        }
        if len(replicas) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(replicas) >= 2, text[:2000]


def test_a_node_killed_under_load(fleet: Fleet) -> None:
    client = _client(fleet, 120)
    outcomes: list[object] = []

    def load() -> None:
        for _ in range(6):
            try:
                outcomes.append(_chat(client))
            except openai.APIStatusError as exc:
                outcomes.append(exc.status_code)
            except openai.APIConnectionError as exc:
                outcomes.append(exc)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    fleet.cluster.workers[0].kill()  # node B, with its replica
    for t in threads:
        t.join(timeout=300)
    # A request the dead node held is retried or fails cleanly (a status, never a hang).
    assert all((isinstance(o, str) and o) or o in (500, 502, 503) for o in outcomes), outcomes
    for _ in range(5):  # and the next ones succeed on the surviving node
        assert _chat(client)
