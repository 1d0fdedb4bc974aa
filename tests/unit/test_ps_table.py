"""``hfd ps``'s table from the rows the daemon sends (``LoadedModel.info()``): the memory the
daemon estimated before loading, and each model's circuit breaker."""

from __future__ import annotations

from typing import Any

from hfd.client.types import RunningModel
from hfd.daemon.cli.client_cmds import PS_COLUMNS, human_duration, ps_table

MIB = 1024 * 1024


def row(name: str, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "task": "embed",
        "engine": "torch",
        "device": "cpu",
        "memory_bytes": 3 * MIB,
        "memory_estimate": {
            "weights": 2 * MIB,
            "kv_cache": 0,
            "activations": MIB,
            "overhead": MIB,
            "total": 4 * MIB,
        },
        "memory_reserved_bytes": 4 * MIB,
        "memory_pool": "ram",
        "in_use": 0,
        "keep_alive": 300.0,
        "expires_in": 299.97,
        "breaker": {"state": "closed", "engines": {}},
    }
    return {**base, **changes}


def test_estimate_and_breaker_columns() -> None:
    open_breaker = {
        "state": "open",
        "engines": {
            "torch": {
                "engine": "torch",
                "state": "open",
                "failures": 3,
                "retry_after": 42.4,
                "last_error": "boom",
            }
        },
    }
    models = [
        RunningModel.from_dict(row("ok")),
        RunningModel.from_dict(
            row("broken", breaker=open_breaker, memory_estimate=None, memory_reserved_bytes=MIB)
        ),
        RunningModel.from_dict(
            row("probing", breaker={"state": "half_open"}, memory_estimate=None, memory_reserved_bytes=0)
        ),
        # An older daemon sends neither field.
        RunningModel.from_dict(
            {k: v for k, v in row("old").items() if not k.startswith(("memory_", "breaker"))}
        ),
    ]
    header, *lines = ps_table(models).splitlines()
    # The header names every column in order, each above its cells.
    starts = [header.index(column) for column in PS_COLUMNS]
    assert starts == sorted(starts) and len(set(starts)) == len(PS_COLUMNS)
    assert header.split() == " ".join(PS_COLUMNS).split()
    assert PS_COLUMNS.index("ESTIMATE") == 6 and PS_COLUMNS.index("BREAKER") == 8
    cells = {line.split()[0]: line.split() for line in lines}
    assert cells["ok"][5:11] == ["3.0", "MiB", "4.0", "MiB", "-", "closed"]
    assert cells["broken"][7:12] == ["1.0", "MiB", "-", "open", "(42s)"]
    assert cells["probing"][7:10] == ["-", "-", "half_open"]
    assert cells["old"][7:10] == ["-", "-", "closed"]
    assert cells["ok"][-2:] == ["in", "5m00s"]


def test_durations_round_before_they_split() -> None:
    assert [human_duration(s) for s in (0.4, 59.6, 299.97, 3599.6, 7200.0)] == [
        "0s",
        "1m00s",
        "5m00s",
        "1h00m",
        "2h00m",
    ]


def test_precision_and_the_engine_fallback_are_shown() -> None:
    models = [
        RunningModel.from_dict(row("bf", engine="openvino", precision="bf16", weight_format="fp32")),
        RunningModel.from_dict(
            row(
                "f32",
                engine="openvino",
                precision="f32",
                weight_format="fp32",
                kv_cache={"planned_bytes": 512 * MIB, "allocated_bytes": 512 * MIB},
            )
        ),
        RunningModel.from_dict(
            row(
                "chat",
                precision="f32",
                weight_format="f32",
                preferred_engine="openvino",
                fallback_reason="openvino/cpu: the engine process died (killed by SIGFPE, code -8)",
            )
        ),
    ]
    lines = ps_table(models).splitlines()[1:]
    cells = {line.split()[0]: line.split() for line in lines[:3]}
    assert cells["bf"][4:7] == ["bf16", "(fp32", "weights)"]
    assert cells["f32"][4] == "f32" and cells["f32"][5] == "3.0"
    assert cells["f32"][9:11] == ["512.0", "MiB"]  # the KV cache's cap
    assert lines[3] == (
        "chat: torch serves, openvino preferred: openvino/cpu: the engine process died (killed by SIGFPE, code -8)"
    )
