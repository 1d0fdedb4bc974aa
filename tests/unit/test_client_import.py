"""``hfd.client`` stays light: in a fresh interpreter it imports only pyzmq, msgpack, numpy and
the standard library, never an engine or the daemon."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
before = set(sys.modules)
import hfd.client
from hfd.client import AsyncClient, Client
new = sorted(set(sys.modules) - before)
print(json.dumps(new))
"""

ALLOWED_THIRD_PARTY = {"zmq", "msgpack", "numpy", "hfd"}


def test_client_imports_only_its_light_dependencies() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    modules = json.loads(out.stdout)
    tops = {m.split(".")[0] for m in modules}
    # cython_runtime is a pseudo-module that Cython extensions (pyzmq, msgpack) register.
    stdlib = set(sys.stdlib_module_names) | {"_distutils_hack", "__future__", "cython_runtime"}
    foreign = sorted(t for t in tops - stdlib - ALLOWED_THIRD_PARTY if not t.startswith("_"))
    assert foreign == [], f"hfd.client pulled in {foreign}"
    daemon_side = [m for m in modules if m.startswith(("hfd.daemon", "hfd.backends", "hfd.ipfs"))]
    assert daemon_side == []
    assert "hfd.client" in modules
