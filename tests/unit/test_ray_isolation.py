"""The single-box daemon never loads Ray: importing every module of ``hfd.daemon`` (the Ray-free
parts of ``hfd.daemon.fleet`` included) and starting a daemon leaves ``ray`` out of
``sys.modules``, so ``hfd serve`` costs nothing where hfd[ray] is installed and works where it
is not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import importlib, json, pkgutil, sys
import anyio
import hfd.daemon
from hfd.daemon.settings import load_settings

RAY_MODULES = {"hfd.daemon.fleet.ray_app", "hfd.daemon.fleet.replica", "hfd.daemon.fleet.ingress"}
for info in pkgutil.walk_packages(hfd.daemon.__path__, "hfd.daemon."):
    if info.name not in RAY_MODULES:
        importlib.import_module(info.name)
from hfd.daemon.app import Daemon

root = sys.argv[1]
settings = load_settings(cli={
    "state_dir": root + "/state", "cache_dir": root + "/cache", "runtime_dir": root + "/run",
    "http_port": 0, "usage_enabled": False,
}, environ={})
daemon = Daemon(settings)

async def main():
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        with anyio.fail_after(60):
            while not daemon.access.ready:
                await anyio.sleep(0.05)
        daemon.stop()

anyio.run(main)
print(json.dumps(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))))
"""


def test_the_daemon_does_not_import_ray(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
