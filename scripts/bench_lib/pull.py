"""Pull benchmark: a ~200 MB model from the local IPFS node into an empty store, verification
included, against the same node streaming the same bytes with ``cat`` to nowhere.

    scripts/bench pull [--size-mb 200] [--repeat 3] [--ipfs-api MULTIADDR] [--out FILE]

Both are measured in one run, alternating, each pull into a fresh store; the result is the ratio
of the two throughputs (medians). Without ``--ipfs-api`` a node is started on loopback the way
the test suite does (Kubo when on PATH, else js-ipfs from scripts/setup-ipfs-node). The weights
are random bytes: what is measured is moving and verifying bytes, not their meaning.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_lib.cli import subcommand_parser

ROOT = Path(__file__).resolve().parents[2]
TARGET_RATIO = 0.5


def _write_model(path: Path, size: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bench", "architectures": ["BenchModel"]}))
    chunk = 8 << 20
    with (path / "model.safetensors").open("wb") as fh:
        left = size
        while left:
            n = min(chunk, left)
            fh.write(os.urandom(n))
            left -= n


def _cat_seconds(api: str, cid: str, path: str) -> tuple[float, int]:
    """The node streaming the file through the same client code a pull uses, to nowhere."""
    import anyio

    from hfd.ipfs.client import KuboClient

    async def main() -> tuple[float, int]:
        async with KuboClient(api, timeout=120) as client:
            start = time.perf_counter()
            n = await client.cat_into(f"/ipfs/{cid}/{path}", lambda chunk: None)
            return time.perf_counter() - start, n

    return anyio.run(main)


def _curl_seconds(api_url: str, cid: str, path: str) -> float | None:
    """The same with curl (a C client) for reference, when curl is installed."""
    curl = shutil.which("curl")
    if curl is None:
        return None
    start = time.perf_counter()
    subprocess.run(
        [curl, "-s", "-f", "-X", "POST", f"{api_url}/api/v0/cat?arg=/ipfs/{cid}/{path}", "-o", os.devnull],
        check=True,
    )
    return time.perf_counter() - start


def _disk_seconds(directory: Path, size: int) -> float:
    """The floor under any pull: writing the same number of bytes to a new file and fsyncing it."""
    block = os.urandom(1 << 20)
    path = directory / "disk-floor.bin"
    directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(len(block), left)
            fh.write(block[:n])
            left -= n
        fh.flush()
        os.fsync(fh.fileno())
    seconds = time.perf_counter() - start
    path.unlink()
    return seconds


def _pull_seconds(settings_dir: Path, api: str, cid: str) -> float:
    from hfd.daemon.settings import load_settings
    from hfd.daemon.store.model_store import ModelStore

    settings = load_settings(
        cli={"state_dir": settings_dir, "ipfs_api": api, "hub_offline": True, "store_use_hf_cache": False},
        environ={},
    )
    store = ModelStore(settings)
    start = time.perf_counter()
    snap = store.pull(f"ipfs://{cid}")
    seconds = time.perf_counter() - start
    assert snap.source == "ipfs"
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = subcommand_parser("pull", __doc__)
    parser.add_argument("--size-mb", type=float, default=200.0, help="size of the random weights file (MB)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="pulls and cats, alternating (median is reported)"
    )
    parser.add_argument("--ipfs-api", help="use this running node instead of starting one")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "pull.json")
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING)
    size = int(args.size_mb * 1_000_000)
    load_before = os.getloadavg()[0]
    node = None
    with tempfile.TemporaryDirectory(prefix="hfd-bench-pull-") as tmp_name:
        tmp = Path(tmp_name)
        api = args.ipfs_api
        node_kind = "external"
        if api is None:
            sys.path.insert(0, str(ROOT / "tests"))
            from support.ipfs_node import IpfsUnavailable, start_node

            try:
                node = start_node(tmp / "node")
            except IpfsUnavailable as exc:
                print(f"bench_pull: no IPFS node: {exc}", file=sys.stderr)
                return 2
            api, node_kind = node.api, node.kind
        try:
            from hfd.daemon.settings import load_settings
            from hfd.daemon.store.model_store import ModelStore
            from hfd.ipfs.multiaddr import parse_api_address

            model = tmp / "model"
            _write_model(model, size)
            publisher = ModelStore(
                load_settings(
                    cli={"state_dir": tmp / "publisher", "ipfs_api": api, "store_use_hf_cache": False},
                    environ={},
                )
            )
            t0 = time.perf_counter()
            published = publisher.publish(str(model), repo="bench/random-200mb")
            publish_s = time.perf_counter() - t0
            total = published.size
            api_url = parse_api_address(api).base_url
            cats: list[float] = []
            curls: list[float] = []
            pulls: list[float] = []
            disks: list[float] = []
            for i in range(args.repeat):
                seconds, n = _cat_seconds(api, published.cid, "model.safetensors")
                assert n == size, f"cat returned {n} bytes, expected {size}"
                cats.append(seconds)
                curl = _curl_seconds(api_url, published.cid, "model.safetensors")
                if curl is not None:
                    curls.append(curl)
                pulls.append(_pull_seconds(tmp / f"store-{i}", api, published.cid))
                disks.append(_disk_seconds(tmp / "disk", size))
                print(
                    f"round {i + 1}: cat {size / seconds / 1e6:.0f} MB/s, pull {total / pulls[-1] / 1e6:.0f} MB/s"
                    + (f", curl {size / curl / 1e6:.0f} MB/s" if curl else "")
                    + f", disk write {size / disks[-1] / 1e6:.0f} MB/s",
                    file=sys.stderr,
                )
        finally:
            if node is not None:
                node.stop()

    cat_s, pull_s = statistics.median(cats), statistics.median(pulls)
    cat_mbps, pull_mbps = size / cat_s / 1e6, total / pull_s / 1e6
    ratio = pull_mbps / cat_mbps
    result: dict[str, Any] = {
        "benchmark": "pull",
        "what": "ipfs:// pull into an empty store (manifest, every file streamed, sha256-verified, fsynced, "
        "placed, catalogued) vs `cat` of the weights file to nowhere through the same client, same node, same run; "
        "curl to /dev/null for reference",
        "node": node_kind,
        "bytes": total,
        "weights_bytes": size,
        "repeat": args.repeat,
        "publish_s": round(publish_s, 3),
        "cat_s": [round(s, 3) for s in cats],
        "pull_s": [round(s, 3) for s in pulls],
        "cat_mb_s": round(cat_mbps, 1),
        "disk_write_s": [round(s, 3) for s in disks],
        "disk_write_mb_s": round(size / statistics.median(disks) / 1e6, 1),
        "curl_s": [round(s, 3) for s in curls],
        "curl_mb_s": round(size / statistics.median(curls) / 1e6, 1) if curls else None,
        "ratio_vs_curl": round(pull_mbps / (size / statistics.median(curls) / 1e6), 3) if curls else None,
        "pull_mb_s": round(pull_mbps, 1),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            # Other work on the box skews both numbers; the load says how busy it was.
            "loadavg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"pull {pull_mbps:.0f} MB/s vs cat {cat_mbps:.0f} MB/s: ratio {ratio:.2f} "
        f"(target >= {TARGET_RATIO}); written to {args.out}"
    )
    return 0
