"""Proving an engine on a model before it serves: where a native crash cannot take the daemon down.

A native crash (SIGFPE, SIGILL, SIGSEGV in an engine's kernels) kills whatever process it happens
in. OpenVINO generation already runs in an engine process of its own, which warms up during load
(``openvino_process``). OpenVINO encoders compile in the daemon's process, so their first compile
for a given model graph, device, properties, CPU and OpenVINO version happens here first, in a
short-lived child process (``probe_compile``) that compiles the model and runs one small batch.
The verdict is cached under ``<cache_dir>/probes/``, so later loads of the same thing compile
in-process at once; a crash is cached too, and the load fails with ``EngineCrashed`` (the model
manager then falls back to the next engine and remembers why).

Run as ``python -m hfd.backends.proving <json request>`` (the child's side).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from hfd._atomic_files import atomic_write_text
from hfd.client.errors import ModelUnavailable

log = logging.getLogger(__name__)

PROBE_REVISION: Final = 1  # bump when what a probe checks changes
_PROBE_TIMEOUT_S: Final = 600.0


class EngineCrashed(ModelUnavailable):
    """An engine died natively (a signal) while loading or warming up a model: it cannot serve
    that model on this machine with these settings. The model manager falls back to the next
    engine and remembers the failure."""

    def __init__(self, message: str, *, code: int | None = None, **kw: Any) -> None:
        details = dict(kw.pop("details", None) or {})
        details.setdefault("exit_code", code)
        super().__init__(message, details=details, **kw)
        self.exit_code = code  # not ``code``: that is the error code clients see


def exit_description(code: int | None) -> str:
    """A child's exit status in words: "killed by SIGFPE, code -8"."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}, code {code}"
        except ValueError:
            return f"killed by signal {-code}, code {code}"
    return f"code {code}"


def _cpu_identity() -> dict[str, Any]:
    from hfd.backends import hardware

    cpu = hardware.probe_cpu()
    return {"model": cpu.model, "arch": cpu.arch, "features": list(cpu.features)}


def probe_key(xml: Path, device: str, properties: dict[str, Any], static_length: int | None) -> str:
    """What a probe's verdict depends on: the graph (the IR's .xml: topology and shapes, not the
    weights), the device and compile properties, the CPU and the OpenVINO version."""
    try:
        version = importlib.metadata.version("openvino")
    except importlib.metadata.PackageNotFoundError:
        version = "none"
    data = {
        "graph": hashlib.sha256(xml.read_bytes()).hexdigest(),
        "device": device,
        "properties": {k: str(v) for k, v in sorted(properties.items())},
        "static_length": static_length,
        "cpu": _cpu_identity(),
        "openvino": version,
        "revision": PROBE_REVISION,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


def probe_compile(
    xml: Path,
    device: str,
    properties: dict[str, Any],
    cache_dir: Path | None,
    *,
    static_length: int | None = None,
    fault: str | None = None,
) -> dict[str, Any]:
    """Compile ``xml`` for ``device`` with ``properties`` and run one small batch, in a child
    process, unless an earlier probe of the same thing passed. Returns the verdict
    (``{"ok": true, "precision": ...}``); raises ``EngineCrashed`` when the child died of a
    signal (now or in the cached verdict)."""
    key = probe_key(xml, device, properties, static_length)
    record = cache_dir / "probes" / f"{key}.json" if cache_dir is not None else None
    if record is not None and fault is None:
        try:
            verdict = json.loads(record.read_text())
        except (OSError, ValueError):
            verdict = None
        if isinstance(verdict, dict):
            _check(verdict, cached=True)
            return verdict
    request = {"xml": str(xml), "device": device, "properties": properties,
               "static_length": static_length, "fault": fault}  # fmt: skip
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", __name__, json.dumps(request)],
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        # No verdict (the probe could not run): nothing is cached and the load goes on.
        log.warning(
            "openvino compile probe could not run", extra={"model_path": str(xml), "error": repr(exc)}
        )
        return {"ok": None}
    seconds = round(time.perf_counter() - started, 3)
    if proc.returncode < 0:
        verdict = {
            "ok": False,
            "reason": f"OpenVINO crashed compiling or running {xml.name} on {device} with "
            f"{properties or 'default properties'} ({exit_description(proc.returncode)})",
            "exit_code": proc.returncode,
        }
    elif proc.returncode == 0:
        try:
            verdict = {"ok": True, **json.loads(proc.stdout.strip().splitlines()[-1])}
        except (ValueError, IndexError):
            verdict = {"ok": True}
    else:
        # A Python-level failure: the compile in the daemon's process raises it too, as an
        # ordinary exception with its own message. Not a crash, not cached.
        log.warning(
            "openvino compile probe failed", extra={"model_path": str(xml), "stderr": proc.stderr[-2000:]}
        )
        return {"ok": None}
    log.info("openvino compile probe", extra={"model_path": str(xml), "verdict": verdict, "seconds": seconds})
    if record is not None and fault is None:
        atomic_write_text(record, json.dumps(verdict))
    _check(verdict, cached=False)
    return verdict


def _check(verdict: dict[str, Any], *, cached: bool) -> None:
    if verdict.get("ok") is False:
        reason = str(verdict.get("reason") or "OpenVINO crashed")
        raise EngineCrashed(
            reason + (" (an earlier probe on this machine)" if cached else ""), code=verdict.get("exit_code")
        )


# -- the child's side ---------------------------------------------------------------------------


def _run_probe(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import openvino as ov

    from hfd.backends.numpy_encoder import encoder_feeds
    from hfd.backends.openvino_cpu import precision_name

    if request.get("fault") == "probe":  # tests only (see openvino_backend._test_fault)
        os.kill(os.getpid(), signal.SIGFPE)
    core = ov.Core()
    model = core.read_model(request["xml"])
    length = request.get("static_length")
    names = [i.get_any_name() for i in model.inputs]
    if length:
        model.reshape({name: [1, int(length)] for name in names})
    compiled = core.compile_model(
        model, request["device"], {"PERFORMANCE_HINT": "LATENCY", **request["properties"]}
    )
    rows, cols = (1, int(length)) if length else (2, 5)
    ids = (np.arange(rows * cols, dtype=np.int64).reshape(rows, cols) % 7) + 1
    feeds = encoder_feeds(names, ids, np.ones_like(ids))
    inputs = {}
    for port in compiled.inputs:
        name = port.get_any_name()
        inputs[name] = feeds.get(name, ids).astype(port.get_element_type().to_dtype())
    compiled.create_infer_request().infer(inputs)
    try:
        precision = precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    except Exception:
        precision = "unknown"
    return {"precision": precision}


def main(argv: list[str]) -> int:
    print(json.dumps(_run_probe(json.loads(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
