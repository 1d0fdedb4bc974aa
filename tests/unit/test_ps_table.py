"""``hfd ps``'s table from the rows the daemon sends (``LoadedModel.info()``): the memory the
daemon estimated before loading, and each model's circuit breaker."""

from __future__ import annotations

from typing import Any

from hfd.client.types import RunningModel
from hfd.daemon.cli.client_cmds import human_duration, ps_table

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
    assert header.split() == [
        "NAME",
        "TASK",
        "ENGINE",
        "DEVICE",
        "MEMORY",
        "ESTIMATE",
        "BREAKER",
        "IN",
        "USE",
        "EXPIRES",
    ]
    cells = {line.split()[0]: line.split() for line in lines}
    assert cells["ok"][4:9] == ["3.0", "MiB", "4.0", "MiB", "closed"]
    assert cells["broken"][6:10] == ["1.0", "MiB", "open", "(42s)"]
    assert cells["probing"][6:8] == ["-", "half_open"]
    assert cells["old"][6:8] == ["-", "closed"]
    assert cells["ok"][-2:] == ["in", "5m00s"]


def test_durations_round_before_they_split() -> None:
    assert [human_duration(s) for s in (0.4, 59.6, 299.97, 3599.6, 7200.0)] == [
        "0s",
        "1m00s",
        "5m00s",
        "1h00m",
        "2h00m",
    ]
