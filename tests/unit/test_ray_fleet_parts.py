"""The Ray-free parts of the scaled-out mode: a request carried as data and run through hfd's
ASGI app (streaming, disconnects), the model a request names, a model's deployment options from
hfd's settings, and the metrics of several replicas merged into one valid exposition."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from support.fake_models import fake_model

from hfd.daemon.fleet.bridge import Forwarded, model_of, run_asgi, served_name
from hfd.daemon.fleet.metrics_hub import merge
from hfd.daemon.fleet.plan import FleetOptions, deployment_options, node_settings
from hfd.daemon.fleet.replica import replica_settings
from hfd.daemon.settings import ModelSpec, SettingsError, load_settings, with_overrides

CANCELLED: list[bool] = []


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"got": (await request.json())["x"]}, status_code=201)


async def stream(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        try:
            for i in range(1000):
                yield f"data: {i}\n\n".encode()
                await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            CANCELLED.append(True)
            raise

    return StreamingResponse(parts(), media_type="text/event-stream")


APP = Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/stream", stream)])


async def _collect(request: Forwarded, limit: int | None = None) -> list[object]:
    out: list[object] = []
    gen = run_asgi(APP, request)
    async for part in gen:
        out.append(part)
        if limit is not None and len(out) >= limit:
            break
    await gen.aclose()
    return out


def test_a_request_runs_through_the_app() -> None:
    body = b'{"x": 3}'
    parts = asyncio.run(
        _collect(Forwarded("POST", "/echo", headers=[(b"content-type", b"application/json")], body=body))
    )
    head, *chunks = parts
    assert isinstance(head, dict) and head["status"] == 201
    assert b"".join(c for c in chunks if isinstance(c, bytes)) == b'{"got":3}'


def test_a_stream_arrives_chunk_by_chunk_and_closing_cancels_it() -> None:
    CANCELLED.clear()
    parts = asyncio.run(_collect(Forwarded("GET", "/stream"), limit=4))
    assert parts[1:] == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
    assert CANCELLED == [True]  # the app saw the client go away


def test_the_model_a_request_names() -> None:
    assert model_of(Forwarded("POST", "/v1/chat/completions", body=b'{"model": "m"}')) == "m"
    assert model_of(Forwarded("GET", "/v1/models/emb")) == "emb"
    assert model_of(Forwarded("POST", "/v1/chat/completions", body=b"{not json")) is None
    form = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n--b--\r\n'
    assert (
        model_of(Forwarded("POST", "/v1/audio/transcriptions", body=form), "multipart/form-data; boundary=b")
        == "whisper"
    )
    assert served_name("chat:latest", {"chat"}) == "chat"
    assert served_name("chat:v2", {"chat"}) is None


def _settings(tmp_path: Path, **changes: object) -> object:
    base = load_settings(
        cli={"state_dir": tmp_path / "s", "cache_dir": tmp_path / "c", "runtime_dir": tmp_path / "r"},
        environ={},
    )
    return with_overrides(base, **changes)


def test_deployment_options_follow_hfd_settings(tmp_path: Path) -> None:
    model = fake_model(tmp_path / "models", "llama")
    forever = ModelSpec(ref=str(model), name="chat", keep_alive=-1, threads=3)
    idle = ModelSpec(ref="org/elsewhere", name="emb", keep_alive=120)
    s = _settings(tmp_path, models=(forever, idle))
    opts = deployment_options(s, forever, FleetOptions(min_replicas=1, max_replicas=3))  # type: ignore[arg-type]
    assert opts["name"] == "model-chat"
    assert opts["ray_actor_options"]["num_cpus"] == 3  # the model's thread budget
    assert opts["ray_actor_options"]["memory"] > 0  # hfd's estimate of the loaded model
    assert opts["autoscaling_config"]["min_replicas"] == 1  # kept forever: never scaled to zero
    assert opts["autoscaling_config"]["max_replicas"] == 3
    opts = deployment_options(s, idle, FleetOptions(replica_cpus=0.5, max_replicas_per_node=1))  # type: ignore[arg-type]
    assert (
        opts["autoscaling_config"]["min_replicas"] == 0
        and opts["autoscaling_config"]["downscale_delay_s"] == 120
    )
    assert "memory" not in opts["ray_actor_options"]  # no files at hand: nothing reserved
    assert opts["ray_actor_options"]["num_cpus"] == 0.5 and opts["max_replicas_per_node"] == 1
    gpu = ModelSpec(ref="org/big", name="big", device="cuda:0")
    assert deployment_options(s, gpu, FleetOptions())["ray_actor_options"]["num_gpus"] == 1  # type: ignore[arg-type]
    assert "num_gpus" not in opts["ray_actor_options"]
    with pytest.raises(ValueError, match="replicas"):
        FleetOptions(min_replicas=3, max_replicas=2)


def test_a_replica_serves_one_model_with_its_nodes_dirs(tmp_path: Path) -> None:
    s = _settings(tmp_path, models=(ModelSpec(ref="a", name="a"), ModelSpec(ref="b", name="b")))
    env = {"HFD_STATE_DIR": "/node/state", "HFD_IPFS_API": "/ip4/10.0.0.2/tcp/5001"}
    r = replica_settings(s, "b", env)  # type: ignore[arg-type]
    assert [m.name for m in r.models] == ["b"]
    assert r.state_dir == Path("/node/state") and r.ipfs_api == "/ip4/10.0.0.2/tcp/5001"
    assert r.allow_pull and not r.http_enabled
    assert node_settings(s, {}).state_dir == s.state_dir  # type: ignore[arg-type,attr-defined]
    with pytest.raises(SettingsError):
        replica_settings(s, "c", env)  # type: ignore[arg-type]


def test_metrics_of_replicas_merge_into_one_exposition() -> None:
    texts = {}
    for replica, n in (("chat/r1", 2), ("chat/r2", 5)):
        reg = CollectorRegistry()
        c = Counter("hfd_requests", "Requests.", ["route"], registry=reg)
        c.labels('/v1/"x"').inc(n)
        texts[replica] = generate_latest(reg).decode()
    merged = merge(texts)
    families = {f.name: f for f in text_string_to_metric_families(merged)}
    samples = [s for s in families["hfd_requests"].samples if s.name == "hfd_requests_total"]
    assert {(s.labels["replica"], s.labels["route"], s.value) for s in samples} == {
        ("chat/r1", '/v1/"x"', 2.0),
        ("chat/r2", '/v1/"x"', 5.0),
    }
    assert merged.count("# TYPE hfd_requests_total counter") == 1
