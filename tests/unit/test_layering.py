"""Import layering: ``hfd.ipfs`` is a transport the store uses, so it never imports the daemon
(the digests and path checks both need live in ``hfd._digests`` and ``hfd._safe_paths``)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import hfd.ipfs

PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("hfd."))))
"""


def test_ipfs_imports_nothing_from_the_daemon() -> None:
    modules = [f"hfd.ipfs.{m.name}" for m in pkgutil.iter_modules(hfd.ipfs.__path__)]
    assert "hfd.ipfs.manifest" in modules
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = json.loads(out.stdout)
    assert [m for m in loaded if m.startswith(("hfd.daemon", "hfd.backends"))] == []
