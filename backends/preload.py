"""Engine libraries imported ahead of the first load, in a background thread started once the
daemon is ready, so that a restarted daemon's first request does not pay for them.

First what a warm load on the OpenVINO or ONNX Runtime engine needs: the hardware report (its
probes import openvino and onnxruntime) and openvino_genai and tokenizers, about a second; then
transformers, which takes several (it imports torch). transformers' lazy module is not safe to
import from two threads at once, so whatever imports it first waits for this import
(``wait_for_transformers``; for at most ten seconds, then it imports transformers itself, so a
hung probe never hangs the loads): the helpers that read a model through it (``_hf``), the
exporters, xgrammar's first grammar, and the model manager before a load on an engine that
imports it itself (torch). A warm load that never touches transformers (OpenVINO or ONNX Runtime with the
tokenizer recorded, ``tokenizer_facts``) does not wait; while one runs (``warm_load``), the
import of transformers does not start (for at most five seconds, and not once anything waits
for it), since on a small box the two would share a core and the daemon's GIL. Where OpenVINO
runs generation and a configured model not loaded yet generates, a spare engine process is
started too (``openvino_process.start_spare``); the daemon's shutdown closes it (``close_spare``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

log = logging.getLogger(__name__)

_started = threading.Event()  # start was called
_transformers = threading.Event()  # and its transformers import is over
# Loads that need no transformers, running now: the import of transformers waits for them to
# end (at most _DEFER_S), since on a small box the two share a core and the daemon's GIL.
_warm_loads = 0
_wanted = False  # something waits for transformers: import it now
_quiet = threading.Condition()
_DEFER_S: Final = 5.0
# How long a load waits for the background imports before it imports transformers itself: the
# engines' step (the hardware probes, the spare engine process) takes about a second, and one
# that hangs must not hang every load. One thread imports transformers at a time (_import_lock).
_WAIT_S: Final = 10.0
_import_lock = threading.Lock()


def start(*, spare_generator: Callable[[], bool] | None = None) -> None:
    """Start the background imports (once per process); when ``spare_generator`` (called in the
    background thread: it may read model files) says a load will generate, and OpenVINO is the
    engine this box runs generation on first, start a spare engine process for it too
    (``openvino_process.start_spare``)."""
    if _started.is_set():
        return
    _started.set()
    threading.Thread(target=_import, args=(spare_generator,), name="hfd-imports", daemon=True).start()


@contextmanager
def warm_load() -> Iterator[None]:
    """A load that needs no transformers runs in this block: the background import of
    transformers does not start meanwhile (for at most ``_DEFER_S``)."""
    global _warm_loads
    with _quiet:
        _warm_loads += 1
    try:
        yield
    finally:
        with _quiet:
            _warm_loads -= 1
            _quiet.notify_all()


def wait_for_transformers() -> None:
    """Block until the background import of transformers, if one was started, is over; after
    ``_WAIT_S`` import it here instead (once the background thread is importing it, that import
    is waited for: transformers' lazy module is not safe to import from two threads at once)."""
    global _wanted
    if not _started.is_set() or _transformers.is_set():
        return
    with _quiet:
        _wanted = True
        _quiet.notify_all()
    if _transformers.wait(_WAIT_S):
        return
    log.warning(
        "background imports still running; importing transformers for the load",
        extra={"waited_seconds": _WAIT_S},
    )
    with _import_lock:
        _import_transformers()


def close_spare() -> None:
    """Close the spare engine process (``start``'s), unless a load took it: at shutdown."""
    openvino_process = sys.modules.get("hfd.backends.openvino_process")  # not imported: no spare
    if openvino_process is not None:
        openvino_process.close_spare()


def _import(spare_generator: Callable[[], bool] | None) -> None:
    started = time.perf_counter()
    try:
        _engines(spare_generator)
        engines = time.perf_counter() - started
        with _quiet:
            _quiet.wait_for(lambda: _warm_loads == 0 or _wanted, timeout=_DEFER_S)
        with _import_lock:
            _import_transformers()
        log.info("background imports done", extra={"engines_seconds": round(engines, 3),
                                                     "seconds": round(time.perf_counter() - started, 3)})  # fmt: skip
    finally:
        _transformers.set()


def _engines(spare_generator: Callable[[], bool] | None) -> None:
    from hfd.backends import hardware, policy

    report = hardware.detect()  # cached: the first load's engine choice reads it
    for module in ("tokenizers", "openvino_genai"):  # not probed, but read by a warm load
        try:
            __import__(module)
        except Exception as exc:  # not installed here
            log.debug("not imported ahead of the first load", extra={"module": module, "error": str(exc)})
    if spare_generator is None:
        return
    try:
        if not spare_generator():
            return
        first = policy.choose_engine("generate", report)[0].engine
        if first == "openvino":
            from hfd.backends import openvino_process

            openvino_process.start_spare()
    except Exception as exc:  # no engine for generation here, or no process could start
        log.info("no spare engine process", extra={"error": str(exc)})


def _import_transformers() -> None:
    try:
        import transformers  # noqa: F401
        from transformers import AutoConfig, AutoTokenizer  # noqa: F401
    except Exception as exc:  # not installed (a box on ONNX Runtime only, the fake engine)
        log.debug("transformers not imported ahead of the first load", extra={"error": str(exc)})
