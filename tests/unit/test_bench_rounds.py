"""``scripts/bench``'s interleaved rounds (``bench_lib.rounds``): every door visited once per
round in ABBA order, each door's rounds merged into one figure, and ratios given per round."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from bench_lib import rounds  # noqa: E402
from bench_lib.load import Level, Sample  # noqa: E402
from bench_lib.peers import ratio_spreads  # noqa: E402


def _door(name: str, units: int, visits: list[str]) -> rounds.Door:
    async def request() -> Sample:
        visits.append(name)
        await asyncio.sleep(0.002)
        return Sample(latency=0.002, units=units)

    return rounds.Door(name, request)


def test_rounds_visit_every_door_in_abba_order_and_merge_each_doors_rounds() -> None:
    visits: list[str] = []
    doors = [_door("a", 10, visits), _door("b", 20, visits)]
    out = asyncio.run(rounds.interleaved(doors, (1, 2), 4, lambda c: 2 * c, "tokens"))
    # One warm-up each, then per level: rounds a,b; b,a; a,b; b,a (2*c requests each).
    expected = ["a", "b"]
    for c in (1, 2):
        for order in (["a", "b"], ["b", "a"], ["a", "b"], ["b", "a"]):
            for name in order:
                expected += [name] * (2 * c)
    assert visits == expected
    a1, a2 = out["a"]
    assert (a1["concurrency"], a1["requests"], a1["tokens"], a1["rounds"]) == (1, 8, 80, 4)
    assert (a2["concurrency"], a2["requests"], a2["tokens"]) == (2, 16, 160)
    assert len(a1["per_round"]) == 4 and all(r > 0 for r in a1["per_round"])
    assert out["b"][0]["tokens"] == 160


def test_merged_rounds_sum_seconds_samples_and_cpu() -> None:
    one = Level(
        "x", 4, seconds=1.0, samples=[Sample(0.1, 5)], daemon_cpu=2.0, daemon_own_cpu=0.5, client_cpu=0.1
    )
    two = Level(
        "x", 4, seconds=3.0, samples=[Sample(0.2, 7)], errors=["e"], daemon_cpu=1.0, daemon_own_cpu=0.25
    )
    merged = rounds.merge([one, two])
    assert (merged.seconds, len(merged.samples), merged.errors) == (4.0, 2, ["e"])
    assert (merged.daemon_cpu, merged.daemon_own_cpu, merged.client_cpu) == (3.0, 0.75, 0.1)
    assert merged.summary("tokens")["tokens_per_s"] == 3.0
    # A round without the server's CPU (no pid) leaves the merged CPU unknown, not low.
    assert rounds.merge([one, Level("x", 4, seconds=1.0)]).daemon_cpu is None


def test_ratios_per_round_give_median_and_spread() -> None:
    hfd = [{"door": "http", "concurrency": 1, "per_round": [100.0, 90.0, 120.0]},
           {"door": "ipc", "concurrency": 1, "per_round": []}]  # fmt: skip
    peer = [{"door": "llama.cpp-q8_0", "concurrency": 1, "per_round": [100.0, 100.0, 100.0]}]
    spreads = ratio_spreads(hfd, peer)
    assert spreads["hfd_http_vs_llama.cpp-q8_0_at_1"] == {"median": 1.0, "min": 0.9, "max": 1.2}
    assert spreads["hfd_ipc_vs_llama.cpp-q8_0_at_1"] is None


def test_a_door_whose_warm_up_fails_is_left_out_and_the_others_measured() -> None:
    visits: list[str] = []

    async def broken() -> Sample:
        raise ConnectionError("refused")

    failed: dict[str, str] = {}
    doors = [_door("a", 10, visits), rounds.Door("b", broken)]
    out = asyncio.run(rounds.interleaved(doors, (1,), 2, lambda c: 1, "tokens", failed=failed))
    assert list(out) == ["a"] and out["a"][0]["requests"] == 2
    assert failed == {"b": "its warm-up request failed: ConnectionError: refused"}
    with pytest.raises(ValueError, match="even"):
        asyncio.run(rounds.interleaved(doors, (1,), 3, lambda c: 1, "tokens"))
